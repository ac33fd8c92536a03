// Package canary_test runs real event-tally processes, a stable member and a
// canary pinned to a slice of partitions, against an embedded NATS server
// and checks which member counts which object (issue 7, acceptance 3).
package canary_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// tallyBin is the event-tally binary built once by TestMain; tests only
// read it.
var tallyBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	bin, cleanup, err := testenv.BuildBinary("../cmd/event-tally")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	tallyBin = bin
	return m.Run()
}
