package reconcile

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
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
