package supervise

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// demoRunner is the demo runner binary built by TestMain.
var demoRunner string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	bin, cleanup, err := testenv.BuildBinary("../../cmd/demo-runner")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	demoRunner = bin
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(append(testenv.NATSServerLeaks(), goleak.IgnoreCurrent(),
			// grpc and nats keep a few process-wide goroutines.
			goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		)...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			return 1
		}
	}
	return code
}
