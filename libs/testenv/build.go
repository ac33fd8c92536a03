package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildBinary builds the Go package pkg (a path the go tool accepts from
// the test's package directory, e.g. "../../cmd/demo-runner") into a fresh
// temporary directory, for a TestMain that runs the binary as a real child
// process. It returns the binary's path and the cleanup that removes the
// directory; the go tool's output goes to stderr. There is no *testing.T in
// TestMain, so a failure is returned.
func BuildBinary(pkg string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "testbin-")
	if err != nil {
		return "", nil, fmt.Errorf("build %s: %w", pkg, err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) } // a temp dir: nothing to do if it fails
	bin = filepath.Join(dir, filepath.Base(pkg))
	build := exec.CommandContext(context.Background(), "go", "build", "-o", bin, pkg)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build %s: %w", pkg, err)
	}
	return bin, cleanup, nil
}
