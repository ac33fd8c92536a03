// Package canary_test runs real event-tally processes, a stable member and a
// canary pinned to a slice of partitions, against an embedded NATS server
// and checks which member counts which object (issue 7, acceptance 3).
package canary_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// tallyBin is the event-tally binary built once by TestMain; tests only
// read it.
var tallyBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "event-tally-canary-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir) //nolint:errcheck // best-effort cleanup of a temp dir
	tallyBin = filepath.Join(dir, "event-tally")
	build := exec.Command("go", "build", "-o", tallyBin, "../cmd/event-tally")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build event-tally:", err)
		return 1
	}
	return m.Run()
}
