package app_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// Binaries built by TestMain: the service, the demo runner, the hostile
// runner (testdata/hostile) and the runner wrapper that snapshots the
// accept queues at a runner's start (testdata/queuesnap).
var (
	serviceBin string
	demoRunner string
	hostileBin string
	queueSnap  string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// Other users may run the binaries (TestHostileRunner runs the service
	// as an unprivileged user when the tests run as root): BuildBinaries'
	// directory is readable by all.
	bins, cleanup, err := testenv.BuildBinaries("../../cmd/runner-manager", "../../cmd/demo-runner", "./testdata/hostile", "./testdata/queuesnap")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	serviceBin, demoRunner, hostileBin, queueSnap = bins[0], bins[1], bins[2], bins[3]
	return m.Run()
}
