package supervise

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// demoRunner is the demo runner binary built by TestMain.
var demoRunner string

func TestMain(m *testing.M) {
	testenv.RunWithBinary(m, "../../cmd/demo-runner", &demoRunner,
		// nats keeps a process-wide poller goroutine.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
