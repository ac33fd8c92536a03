package app_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// Binaries built once for the package's tests.
var (
	demoRunnerBin string
	proxyBin      string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agui-proxy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	demoRunnerBin = filepath.Join(dir, "demo-runner")
	proxyBin = filepath.Join(dir, "agui-proxy")
	for _, b := range []struct{ dir, pkg, out string }{
		{dir: "../../../runner-manager", pkg: "./cmd/demo-runner", out: demoRunnerBin},
		{dir: "../..", pkg: "./cmd/agui-proxy", out: proxyBin},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = b.dir
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
			return 1
		}
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(append(testenv.NATSServerLeaks(),
			// The JWKS refresher of keyfunc/jwkset ends with its ctx but is
			// not waited for by the library.
			goleak.IgnoreTopFunction("github.com/MicahParks/jwkset.NewStorageFromHTTP.func1"),
		)...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			return 1
		}
	}
	return code
}
