package reconcile

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestStoppedWriteRetried: a stop of a session no runner runs, whose
// Stopped cannot be written for a while (an API restart), is not acked: the
// event is retried. And should it be lost anyway, the resync writes
// Stopped: a session left in Stopping accepts neither a start nor a stop.
func TestStoppedWriteRetried(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{}) // no resync of its own: the test runs one below
	s := e.create("never ran")
	id := s.GetMetadata().GetId()
	st := e.setPhase(id, session.PhaseStopping)
	// The write is retried inside status.Write; failing more calls than it
	// tries makes the handler see the failure.
	e.api.FailNext(ambientv1.SessionService_UpdateSessionStatus_FullMethodName, 4, codes.Unavailable)
	if err := rp.rec.Handle(t.Context(), group.Message{Event: e.event(modified, st), Attempt: 1}); err == nil {
		t.Fatal("the stop's event was acked while its Stopped was not written")
	}
	// The event is not handled again here (as if lost): a resync ends it.
	rp.rec.resync(t.Context())
	e.waitPhase(id, session.PhaseStopped, 10*time.Second)
}

// gatedAPI holds GetSession of one session until gate is closed.
type gatedAPI struct {
	sessionAPI
	id   string
	gate chan struct{}
}

func (g *gatedAPI) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	if id == g.id {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.sessionAPI.GetSession(ctx, id)
}

// TestStopBetweenClaimAndReread: replica B has claimed a Pending session
// and is re-reading it before the spawn when the user stops it; replica A
// handles the stop, finds B's claim and leaves the stop to B (a stop request
// on the record). B's re-read sees Stopping: B writes Stopped (it used to
// release the claim and write nothing, leaving the session in Stopping for
// good). No resync runs here, so the Stopped is B's.
func TestStopBetweenClaimAndReread(t *testing.T) {
	e := newEnv(t)
	s := e.create("s")
	id := s.GetMetadata().GetId()
	g := &gatedAPI{sessionAPI: e.client, id: id, gate: make(chan struct{})}
	rpB := e.replica(replicaOpts{member: "rm-b", api: g})
	rpA := e.replica(replicaOpts{member: "rm-a"})
	e.handle(rpB, added, s) // claimed; the re-read waits at the gate
	if rec, err := registry.Get(t.Context(), e.runners, id); err != nil || rec.Owner != "rm-b" {
		t.Fatalf("record %+v (%v), want one claimed by rm-b", rec, err)
	}
	e.handle(rpA, modified, e.setPhase(id, session.PhaseStopping))
	if rec, err := registry.Get(t.Context(), e.runners, id); err != nil || rec.State != registry.StateStopping {
		t.Fatalf("record %+v (%v) after A's stop, want rm-b's with a stop request", rec, err)
	}
	close(g.gate)
	e.waitPhase(id, session.PhaseStopped, 10*time.Second)
	if _, running := rpB.mgr.Get(id); running {
		t.Error("B started a runner for a stopped session")
	}
}
