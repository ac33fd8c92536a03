package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// BuildBinary builds the Go package pkg (a path the go tool accepts from
// the test's package directory, e.g. "../../cmd/demo-runner") into a fresh
// temporary directory, for a TestMain that runs the binary as a real child
// process. It returns the binary's path and the cleanup that removes the
// directory; the go tool's output goes to stderr. There is no *testing.T in
// TestMain, so a failure is returned.
func BuildBinary(pkg string) (bin string, cleanup func(), err error) {
	bins, cleanup, err := BuildBinaries(pkg)
	if err != nil {
		return "", nil, err
	}
	return bins[0], cleanup, nil
}

// BuildBinaries is BuildBinary for several packages, built into one
// directory, in the order given. The directory is readable by every user:
// a test may run a binary as another one (runner-manager runs itself
// unprivileged when the tests run as root).
func BuildBinaries(pkgs ...string) (bins []string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "testbin-")
	if err != nil {
		return nil, nil, fmt.Errorf("build %v: %w", pkgs, err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) } // a temp dir: nothing to do if it fails
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("build %v: %w", pkgs, err)
	}
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, filepath.Base(pkg))
		build := exec.CommandContext(context.Background(), "go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("build %s: %w", pkg, err)
		}
		bins = append(bins, bin)
	}
	return bins, cleanup, nil
}

// RunWithBinary is the TestMain of a package whose tests start the binary
// of pkg as a real child process: it builds it (BuildBinary), stores its
// path in *bin, runs the tests and, when they pass, fails the run if
// goroutines are left (goleak, past NATSServerLeaks and ignore). It removes
// the binary and exits with the run's code.
func RunWithBinary(m *testing.M, pkg string, bin *string, ignore ...goleak.Option) {
	path, cleanup, err := BuildBinary(pkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = path
	// goleak.Cleanup takes the place of VerifyTestMain's os.Exit.
	goleak.VerifyTestMain(m, append(append(NATSServerLeaks(), ignore...),
		goleak.Cleanup(func(code int) {
			cleanup()
			os.Exit(code)
		}))...)
}
