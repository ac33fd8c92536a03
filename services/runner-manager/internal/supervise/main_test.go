package supervise

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	dir, err := os.MkdirTemp("", "supervise-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	demoRunner = filepath.Join(dir, "demo-runner")
	build := exec.CommandContext(context.Background(), "go", "build", "-o", demoRunner, "../../cmd/demo-runner")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build demo runner:", err)
		return 1
	}
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
