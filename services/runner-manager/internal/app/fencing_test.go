package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// memberTTL is the harness's MEMBER_TTL (world.start).
const memberTTL = time.Second

// sampler watches the runner processes of some services and remembers the
// worst it saw: sessions with two live runners at once.
type sampler struct {
	roots []string
	twice map[string][]int // session id -> the pids seen alive together
}

func (s *sampler) sample() {
	for id, pids := range runnersBySession(s.roots...) {
		if len(pids) > 1 {
			s.twice[id] = pids
		}
	}
}

// sampleFor samples every 20 ms for d.
func (s *sampler) sampleFor(d time.Duration) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	end := time.After(d)
	for {
		s.sample()
		select {
		case <-end:
			return
		case <-tick.C:
		}
	}
}

// twoReplicas starts rm-a and rm-b and waits until both are group members.
func twoReplicas(t *testing.T, w *world, extra ...string) (*service, *service) {
	t.Helper()
	a := w.start("rm-a", 20, extra...)
	b := w.start("rm-b", 20, extra...)
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, m := range []string{"rm-a", "rm-b"} {
			if _, err := w.js.Consumer(t.Context(), events.StreamName+"-runner-manager", m); err != nil {
				return fmt.Errorf("consumer %s: %w", m, err)
			}
		}
		return nil
	})
	return a, b
}

// Issue 14 finding 1: two replicas, 10 sessions Running, NATS stopped for
// 3 x MEMBER_TTL and restarted on the same store. Before, the first
// replica to reconnect found its peer's heartbeat expired, took over all
// of its sessions and started a second runner for each while the first
// still ran. Now nothing moves: no session ever has two live runners
// (sampled from the process table throughout), every record keeps its
// owner and pid, and every session stays Running with the same runner.
func TestNATSOutageMovesNothing(t *testing.T) {
	w := newWorld(t)
	a, b := twoReplicas(t, w)
	const n = 10
	var ids []string
	for i := range n {
		ids = append(ids, w.create(fmt.Sprintf("o%02d", i)))
	}
	w.waitAll(ids, "Running", 30*time.Second)
	before := map[string]registry.Record{}
	owners := map[string]int{}
	for _, id := range ids {
		rec, err := w.record(id)
		if err != nil {
			t.Fatal(err)
		}
		before[id] = rec
		owners[rec.Owner]++
	}
	t.Logf("sessions per replica before the outage: %v", owners)
	s := &sampler{roots: []string{a.root, b.root}, twice: map[string][]int{}}
	s.sample()

	w.nats.Shutdown()
	s.sampleFor(3 * memberTTL)
	if err := w.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	// Long enough for every rule that could move a session: both replicas
	// reconnect (backoff from 100 ms), settle (one TTL), sweep (300 ms),
	// and probe.
	s.sampleFor(4 * memberTTL)

	if len(s.twice) > 0 {
		t.Errorf("sessions with two live runners at once: %v", s.twice)
	}
	moved := 0
	for _, id := range ids {
		rec, err := w.record(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if rec.Owner != before[id].Owner || rec.PID != before[id].PID {
			moved++
			t.Errorf("session %s moved: %s pid %d -> %s pid %d", id, before[id].Owner, before[id].PID, rec.Owner, rec.PID)
		}
	}
	live := runnersBySession(a.root, b.root)
	for id, p := range w.phases(ids) {
		if p != "Running" {
			t.Errorf("session %s is %s after the outage", id, p)
		}
		if pids := live[id]; len(pids) != 1 || pids[0] != before[id].PID {
			t.Errorf("session %s runners %v, want its original %d", id, pids, before[id].PID)
		}
	}
	t.Logf("moved=%d twice=%d after a %v NATS outage (MEMBER_TTL %v)", moved, len(s.twice), 3*memberTTL, memberTTL)
}
