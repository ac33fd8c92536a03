package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// stubbornRunner ignores SIGTERM and leaves a child that inherits that (a
// tool a runner started, busy with its own work), then becomes the demo
// runner named by its argument. The demo runner exits on SIGTERM; the child
// ends only with runner-manager's SIGKILL to the group after
// LOCAL_STOP_GRACE.
const stubbornRunner = `#!/bin/sh
trap '' TERM
sleep 600 &
exec "$1"
`

// TestSecondInterruptKillsWhatIsStopping: Ctrl-C stops the stack one
// service after the other, each with up to --stop-grace; a second Ctrl-C
// kills what is still stopping instead of being ignored. Here runner-manager
// would wait half of a 2-minute --stop-grace for the runner's child.
func TestSecondInterruptKillsWhatIsStopping(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	script := filepath.Join(t.TempDir(), "stubborn.sh")
	if err := os.WriteFile(script, []byte(stubbornRunner), 0o600); err != nil { // read by sh, not executed
		t.Fatal(err)
	}
	line := fmt.Sprintf("sh %s %s", script, filepath.Join(binDir, "demo-runner"))
	s := startStackWith(t, stackOpts{args: []string{"--runner-command", line, "--stop-grace", "2m"}})

	s.rest(http.MethodPost, "/projects", map[string]any{"name": "stubborn"})
	id := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "stubborn", "project_id": "stubborn"}))
	s.waitPhase(id, 60*time.Second, "Running")
	t.Cleanup(func() { // the forced stop leaves the runner's child, as documented
		for _, pid := range runnerPIDs(id) {
			_ = syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // test cleanup; it may be gone
		}
	})

	exited := make(chan error, 1)
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() { exited <- s.cmd.Wait() }() // owned by the test; ends when devstack exits
	// runner-manager, stopping, waits for the runner's child: one minute.
	testenv.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(s.out.String(), "devstack: stopping services") {
			return fmt.Errorf("devstack is not stopping yet")
		}
		return nil
	})
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("devstack exit after the second interrupt: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("devstack still stopping 30s after a second Ctrl-C (runner-manager's grace is 1m)")
	}
	if !strings.Contains(s.out.String(), "interrupted again") {
		t.Errorf("devstack did not say why it stopped waiting:\n%s", s.out)
	}
}
