package apply

import (
	"os"
	"testing"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
)

// kube is the package's kube-apiserver; kube.Env(t) skips a test when the
// binaries are not built.
var kube kubetest.Shared

func TestMain(m *testing.M) { os.Exit(kube.Main(m)) }
