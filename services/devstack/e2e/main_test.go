// Package e2e runs the whole control plane the way `make run` does (the
// devstack binary, every service as a process) and drives it as a user would:
// REST calls to the API, ambientctl, HTTP to the proxy and event-tally.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// binDir holds every binary, built once for the package.
var binDir string

// binaries are the packages devstack and the tests run, built like `make build`.
var binaries = []string{
	"github.com/ambient-code/control-plane/libs/cmd/memapi",
	"github.com/ambient-code/control-plane/services/informer/cmd/informer",
	"github.com/ambient-code/control-plane/services/event-tally/cmd/event-tally",
	"github.com/ambient-code/control-plane/services/runner-manager/cmd/runner-manager",
	"github.com/ambient-code/control-plane/services/runner-manager/cmd/demo-runner",
	"github.com/ambient-code/control-plane/services/agui-proxy/cmd/agui-proxy",
	"github.com/ambient-code/control-plane/services/ambientctl/cmd/ambientctl",
	"github.com/ambient-code/control-plane/services/devstack/cmd/devstack",
	// A stand-in for the platform's runner's first prompt (firstprompt_test.go).
	"github.com/ambient-code/control-plane/services/devstack/e2e/testdata/platformrunner",
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ambient-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir) //nolint:errcheck // temp dir
	binDir = dir
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, binaries...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		return 1
	}
	return m.Run()
}
