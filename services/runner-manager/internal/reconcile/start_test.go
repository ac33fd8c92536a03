package reconcile

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// slowRead is the API with the first read of one session held until
// release is closed.
type slowRead struct {
	sessionAPI
	id      string
	reading chan struct{} // closed when the held read began
	release chan struct{}
	once    sync.Once
}

func (s *slowRead) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	if id == s.id {
		held := false
		s.once.Do(func() { held = true })
		if held {
			close(s.reading)
			select {
			case <-s.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return s.sessionAPI.GetSession(ctx, id)
}

// Issue 15: the handler only claims the session; the rest of the start
// (re-read, spawn, health wait, phases) runs on its own goroutine, so a
// member's one message in flight is acked at once and starts overlap. A
// session whose start is slow does not hold the next session's event.
func TestStartDoesNotHoldTheHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	slow := e.create("slow")
	fast := e.create("fast")
	api := &slowRead{sessionAPI: e.client, id: slow.GetMetadata().GetId(), reading: make(chan struct{}), release: make(chan struct{})}
	rp := e.replica(replicaOpts{api: api})
	handled := make(chan error, 1) // Handle's result
	go func() {                    // owned by this test; ends when Handle returns
		handled <- rp.rec.Handle(t.Context(), group.Message{Event: e.event(added, slow), Attempt: 1})
	}()
	<-api.reading
	select {
	case err := <-handled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(api.release)
		t.Fatal("the event's handler waits for the session's start")
	}
	e.handle(rp, added, fast)
	e.waitPhase(fast.GetMetadata().GetId(), session.PhaseRunning, 10*time.Second)
	if p := session.PhaseOf(e.get(slow.GetMetadata().GetId())); p != session.PhasePending && p != session.PhaseNone {
		t.Fatalf("slow session %q before its read returned", p)
	}
	close(api.release)
	e.waitPhase(slow.GetMetadata().GetId(), session.PhaseRunning, 10*time.Second)
}

// readCounter is the API counting the reads of each session.
type readCounter struct {
	sessionAPI
	mu    sync.Mutex
	reads map[string]int
}

func (c *readCounter) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	c.mu.Lock()
	c.reads[id]++
	c.mu.Unlock()
	return c.sessionAPI.GetSession(ctx, id)
}

func (c *readCounter) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[id]
}

// Sessions waiting for capacity start longest waiting first, one per free
// slot. Before, every queued session was claimed and re-read when one slot
// freed (the handed-off starts held no slot yet, so the capacity hint
// stayed true), all but the winner went back to the queue as its newest
// entries, and which one won was a race.
func TestQueuedSessionsStartInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	api := &readCounter{sessionAPI: e.client, reads: map[string]int{}}
	rp := e.replica(replicaOpts{api: api, max: 1, ports: 4})
	first := e.create("running")
	e.handle(rp, added, first)
	e.waitPhase(first.GetMetadata().GetId(), session.PhaseRunning, 5*time.Second)
	var waiting []string
	for _, name := range []string{"waits 1", "waits 2", "waits 3", "waits 4"} {
		s := e.create(name)
		e.handle(rp, added, s)
		waiting = append(waiting, s.GetMetadata().GetId())
		testenv.Eventually(t, 5*time.Second, func() error {
			if !rp.rec.queue.Has(s.GetMetadata().GetId()) {
				return fmt.Errorf("%s not queued", name)
			}
			return nil
		})
	}
	running := first.GetMetadata().GetId()
	for i, id := range waiting {
		before := make([]int, len(waiting))
		for j, w := range waiting {
			before[j] = api.count(w)
		}
		e.handle(rp, modified, e.setPhase(running, session.PhaseStopping))
		e.waitPhase(running, session.PhaseStopped, 5*time.Second)
		e.waitPhase(id, session.PhaseRunning, 5*time.Second)
		for j, w := range waiting[i+1:] {
			if n := api.count(w) - before[i+1+j]; n != 0 {
				t.Errorf("slot %d: waiting session %d was read %d times, want 0 (only the longest waiting starts)", i+1, i+2+j, n)
			}
			if p := session.PhaseOf(e.get(w)); p != session.PhaseNone {
				t.Fatalf("slot %d: waiting session %d is %q, want it still waiting", i+1, i+2+j, p)
			}
		}
		running = id
	}
}
