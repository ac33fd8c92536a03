package reconcile

import (
	"os"
	"testing"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
)

var kenv *kubetest.Env

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &kenv)) }
