package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Binaries built by TestMain: the service and the demo runner.
var (
	serviceBin string
	demoRunner string
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
	serviceBin = filepath.Join(dir, "runner-manager")
	demoRunner = filepath.Join(dir, "demo-runner")
	for bin, pkg := range map[string]string{serviceBin: "../../cmd/runner-manager", demoRunner: "../../cmd/demo-runner"} {
		build := exec.CommandContext(context.Background(), "go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg+":", err)
			return 1
		}
	}
	return m.Run()
}
