package claim

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// Members.Hold owns a goroutine; none may outlive the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(testenv.NATSServerLeaks(),
		// nats keeps a process-wide poller goroutine.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)...)
}
