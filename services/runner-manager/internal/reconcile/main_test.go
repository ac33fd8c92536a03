package reconcile

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// demoRunner is the demo runner binary built by TestMain.
var demoRunner string

func TestMain(m *testing.M) {
	if os.Getenv(doomedManagerEnv) != "" {
		os.Exit(m.Run()) // a crashing runner-manager (lost_group_test.go): it is given its runner command
	}
	testenv.RunWithBinary(m, "../../cmd/demo-runner", &demoRunner,
		// grpc and nats keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
