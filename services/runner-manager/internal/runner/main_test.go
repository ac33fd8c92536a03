package runner

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// demoRunner is the path of the demo runner binary built by TestMain.
var demoRunner string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "runner-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	demoRunner = filepath.Join(dir, "demo-runner")
	build := exec.CommandContext(context.Background(), "go", "build", "-o", demoRunner, "../../cmd/demo-runner")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build demo runner:", err)
		return 1
	}
	return m.Run()
}
