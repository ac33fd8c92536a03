package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Binaries built by TestMain: the service, the demo runner and the
// hostile runner (testdata/hostile).
var (
	serviceBin string
	demoRunner string
	hostileBin string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "runner-manager-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Other users may run the binaries (TestHostileRunner runs the service
	// as an unprivileged user when the tests run as root).
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	serviceBin = filepath.Join(dir, "runner-manager")
	demoRunner = filepath.Join(dir, "demo-runner")
	hostileBin = filepath.Join(dir, "hostile")
	for bin, pkg := range map[string]string{serviceBin: "../../cmd/runner-manager", demoRunner: "../../cmd/demo-runner", hostileBin: "./testdata/hostile"} {
		build := exec.CommandContext(context.Background(), "go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			return 1
		}
	}
	return m.Run()
}
