package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// A user's stop that lands while the replica shuts down: the replica takes
// no events any more (its record watch has ended too), so nothing tells
// its supervisor about the Stopping. Before, the shutdown's hand-back
// wrote Pending over it, whichever replica was alive started the session
// again, and the stop was lost (a replayed Stopping event then found
// Pending and looked stale). The hand-back is written only over a phase
// that still wants a runner; a Stopping ends Stopped.
func TestStopDuringShutdownNotHandedBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The runner holds its SIGTERM until the test lets it go, so the
	// user's stop lands after the shutdown began and before the runner's
	// final phase is written.
	script := fmt.Sprintf(`trap 'touch terming; while [ ! -f go ]; do sleep 0.02; done; exit 0' TERM; %s & wait $!; wait`, demoRunner)
	rp := e.replica(replicaOpts{command: []string{"/bin/sh", "-c", script}, grace: 20 * time.Second})
	s := e.create("stopped while its replica shuts down")
	id := s.GetMetadata().GetId()
	e.startRunning(rp, s)
	ws := filepath.Join(rp.root, id)

	rp.cancel() // SIGTERM, as at a rollout
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := os.Stat(filepath.Join(ws, "terming"))
		return err
	})
	e.setPhase(id, session.PhaseStopping) // its event reaches no replica in time
	touch(t, filepath.Join(ws, "go"))
	rp.stop(t)

	got := e.get(id)
	if p := session.PhaseOf(got); p != session.PhaseStopped {
		t.Fatalf("phase %q after a stop during the shutdown, want %q (conditions %s)", p, session.PhaseStopped, got.GetConditions())
	}
	if got.GetCompletionTime() == nil {
		t.Fatal("no completion_time")
	}
}
