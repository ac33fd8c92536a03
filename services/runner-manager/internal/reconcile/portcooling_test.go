package reconcile

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// TestCoolingPortKeepsLongestWaitingFirst: a project's longest waiting
// session starts first although the port its slot freed waits out
// PORT_REUSE_DELAY. Before, Manager.Free counted the cooling port as
// free, so the freed slot made the queue take the longest waiting A,
// whose start found only the cooling port and queued A again at the back
// of its project; at the next freed slot the younger B got the port that
// had cooled meanwhile and A waited on. Now the cooling port is no room
// (no start is tried for it), the queue wakes when it is reusable, and a
// start deferred again keeps its place.
func TestCoolingPortKeepsLongestWaitingFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const delay = 3 * time.Second
	rp := e.replica(replicaOpts{max: 2, ports: 2, reuseDelay: delay})
	var running []string
	for i := range 2 {
		s := e.create(fmt.Sprintf("running-%d", i))
		e.startRunning(rp, s)
		running = append(running, s.GetMetadata().GetId())
	}
	queued := func(id, reason string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			c, ok := status.Conditions(e.get(id)).Get(status.CondRunnerStarted)
			if !ok || c.Reason != reason || !rp.rec.queue.Has(id) || rp.rec.starting.Load() != 0 {
				return fmt.Errorf("session %s not queued with %s: %+v", id, reason, c)
			}
			return nil
		})
	}
	a := e.create("a-oldest").GetMetadata().GetId()
	e.handle(rp, added, e.get(a))
	queued(a, status.ReasonCapacityExceeded)
	b := e.create("b-younger").GetMetadata().GetId()
	e.handle(rp, added, e.get(b))
	queued(b, status.ReasonCapacityExceeded)

	// A slot frees; its port cools.
	e.handle(rp, modified, e.setPhase(running[0], session.PhaseStopping))
	e.waitPhase(running[0], session.PhaseStopped, 5*time.Second)
	freed := time.Now()
	// The first port has cooled (a lower bound, not a timing assertion).
	testenv.Eventually(t, 30*time.Second, func() error {
		if time.Since(freed) < delay+500*time.Millisecond {
			return errors.New("port still cooling")
		}
		return nil
	})
	// The second slot frees: one port is reusable now (unless A has it
	// already), one cools.
	e.handle(rp, modified, e.setPhase(running[1], session.PhaseStopping))
	e.waitPhase(running[1], session.PhaseStopped, 5*time.Second)
	testenv.Eventually(t, 30*time.Second, func() error {
		pa, pb := session.PhaseOf(e.get(a)), session.PhaseOf(e.get(b))
		if pb == session.PhaseRunning && pa != session.PhaseRunning {
			t.Fatalf("the reusable port went to the younger session %s; the longest waiting %s still waits (phase %q)", b, a, pa)
		}
		if pa != session.PhaseRunning {
			return fmt.Errorf("a %q b %q", pa, pb)
		}
		return nil
	})
	// B gets the second port once it has cooled: the queue wakes for it
	// with no runner ending and no resync.
	e.waitPhase(b, session.PhaseRunning, 30*time.Second)
}
