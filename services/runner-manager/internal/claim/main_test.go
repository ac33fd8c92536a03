package claim

import (
	"testing"

	"go.uber.org/goleak"
)

// Members.Hold owns a goroutine; none may outlive the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats keeps a process-wide poller goroutine.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
