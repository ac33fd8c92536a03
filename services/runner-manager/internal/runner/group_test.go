package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// groupScript starts a runner whose leader exits at once on SIGTERM and
// whose child (same process group) runs childTrap on SIGTERM; the child
// writes its pid to child.pid once its trap is set.
func groupScript(childTrap string) []string {
	script := `( trap '` + childTrap + `' TERM; sh -c 'echo $PPID' > child.pid; while :; do sleep 0.05; done ) &
trap 'exit 0' TERM
while :; do sleep 0.05; done`
	return []string{"/bin/sh", "-c", script}
}

// startGroup starts script's runner and returns it with its child's pid,
// once the child's trap is set.
func startGroup(t *testing.T, m *Manager) (*Process, int) {
	t.Helper()
	p, err := m.Start(t.Context(), Session{ID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	return p, testenv.PIDFile(t, filepath.Join(p.Workspace, "child.pid"), 5*time.Second)
}

// TestStopGraceCoversTheGroup: the stop grace is the process group's, not
// the leader's. The leader exits at once on SIGTERM; its child needs a
// while to finish its own SIGTERM handling (it writes child-done), and
// gets it, both when a session is stopped (Stop) and at shutdown
// (StopAll). Stop returns as soon as the group is empty, well before the
// long grace ends. Before the fix the group was SIGKILLed as soon as the
// leader exited and the child never wrote its file.
func TestStopGraceCoversTheGroup(t *testing.T) {
	t.Parallel()
	const grace = time.Minute
	stops := map[string]func(ctx context.Context, m *Manager, p *Process) error{
		"stop":     func(ctx context.Context, _ *Manager, p *Process) error { return p.Stop(ctx, grace) },
		"shutdown": func(ctx context.Context, m *Manager, _ *Process) error { return m.StopAll(ctx) },
	}
	for name, stop := range stops {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, groupScript(`sleep 0.5; echo done > child-done; exit 0`), 1, 2)
			m.cfg.StopGrace = grace
			p, child := startGroup(t, m)
			start := time.Now()
			if err := stop(t.Context(), m, p); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took >= grace {
				t.Errorf("stop took %v: it waited for the grace, not for the group", took)
			}
			if _, err := os.Stat(filepath.Join(p.Workspace, "child-done")); err != nil {
				t.Fatalf("child %d did not finish its SIGTERM handler: %v", child, err)
			}
			if err := syscall.Kill(-p.PID, 0); !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("stop returned with members left in group %d: %v", p.PID, err)
			}
		})
	}
}

// TestStopKillsGroupMemberAtGrace: a child that ignores SIGTERM outlives
// its leader (which exits at once) until the grace ends, and is SIGKILLed
// then. Before the fix it was killed as soon as the leader exited.
func TestStopKillsGroupMemberAtGrace(t *testing.T) {
	t.Parallel()
	const grace = 500 * time.Millisecond
	m := newManager(t, groupScript(""), 1, 2) // trap '' TERM: ignore it
	p, child := startGroup(t, m)
	start := time.Now()
	if err := p.Stop(t.Context(), grace); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < grace {
		t.Errorf("stop returned after %v, before the %v grace: the child was not given it", took, grace)
	}
	// Reparented to init when its leader exited; gone once init reaped it.
	testenv.Eventually(t, 5*time.Second, func() error {
		if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("child %d survived the grace: %v", child, err)
		}
		return nil
	})
}
