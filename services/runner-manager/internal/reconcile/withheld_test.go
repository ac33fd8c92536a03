package reconcile

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// unpublished is the condition the informer writes on a session over the
// event payload limit (services/informer/internal/condition).
const unpublished = `[{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge","message":"the session is larger than the event payload limit"}]`

func (e *env) setConditions(id, conds string) {
	e.t.Helper()
	if _, err := e.client.UpdateSessionStatus(e.t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: proto.String(conds)}); err != nil {
		e.t.Fatal(err)
	}
}

// TestResyncLeavesWithheldSession: a Pending session whose state the
// informer could not publish (over the payload limit: consumers got a
// reference event and dead-lettered it) is not started by the resync,
// which reads sessions from the API: kube-reconciler, which reads the
// informer's cache, never sees it either, and the two modes must agree.
// Once the condition goes (a complete version published), the resync
// starts it.
func TestResyncLeavesWithheldSession(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	id := e.create("over the limit").GetMetadata().GetId()
	e.setConditions(id, unpublished)

	rp.rec.resync(t.Context())
	if _, running := rp.mgr.Get(id); running {
		t.Fatal("the resync started a runner for a session whose state was never published")
	}
	if rec, err := registry.Get(t.Context(), e.runners, id); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("record %+v (%v) after the resync, want none", rec, err)
	}
	if p := session.PhaseOf(e.get(id)); !p.WantsRunner() || p == session.PhaseRunning {
		t.Fatalf("phase %q after the resync, want the session left as it was", p)
	}

	e.setConditions(id, "[]")
	rp.rec.confirmStarts(t.Context(), rp.rec.resync(t.Context()))
	e.waitPhase(id, session.PhaseRunning, 5*time.Second)
}

// TestResyncStartReadsAgain: the informer flags a session over the payload
// limit only after it was created (its reference event comes first), so a
// resync list can show it unflagged. The resync does not start a session
// from its list: it reads it again after resyncStartDelay, and the flag
// written in between keeps it from running. A session with nothing in
// between is started from the second read, and one deleted in between is
// not.
func TestResyncStartReadsAgain(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	flagged := e.create("flagged after the list").GetMetadata().GetId()
	plain := e.create("nothing in between").GetMetadata().GetId()
	gone := e.create("deleted in between").GetMetadata().GetId()

	starts := rp.rec.resync(t.Context())
	slices.Sort(starts)
	if want := []string{flagged, plain, gone}; !slices.Equal(starts, slices.Sorted(slices.Values(want))) {
		t.Fatalf("the resync would start %v, want %v", starts, want)
	}
	for _, id := range starts {
		if _, running := rp.mgr.Get(id); running {
			t.Fatalf("session %s started from the resync's list, before a second read", id)
		}
	}
	e.setConditions(flagged, unpublished)
	if err := e.client.DeleteSession(t.Context(), gone); err != nil {
		t.Fatal(err)
	}

	rp.rec.confirmStarts(t.Context(), append(starts, plain)) // listed twice: read once
	e.waitPhase(plain, session.PhaseRunning, 5*time.Second)
	for _, id := range []string{flagged, gone} {
		if _, running := rp.mgr.Get(id); running {
			t.Errorf("session %s started although its second read says no", id)
		}
		if rec, err := registry.Get(t.Context(), e.runners, id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("record %+v (%v) of session %s, want none", rec, err, id)
		}
	}
}

// TestRunnerCheckLeavesWithheldSession: the periodic check of local
// runners (which reads each runner's session from the API) does not stop a
// runner for a state that was never published (a Stopping written while
// the session is over the payload limit); published, the stop goes ahead.
// A delete is acted on either way: its event fits (metadata only).
func TestRunnerCheckLeavesWithheldSession(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	kept := e.create("kept").GetMetadata().GetId()
	deleted := e.create("deleted").GetMetadata().GetId()
	for _, id := range []string{kept, deleted} {
		e.startRunning(rp, e.get(id))
		e.setConditions(id, unpublished)
		e.setPhase(id, session.PhaseStopping)
	}
	if err := e.client.DeleteSession(t.Context(), deleted); err != nil {
		t.Fatal(err)
	}

	rp.rec.checkRunners(t.Context())
	if _, running := rp.mgr.Get(kept); !running {
		t.Fatal("the runner check stopped the runner of a session whose Stopping was never published")
	}
	waitNoRunner(t, rp, deleted)

	e.setConditions(kept, "[]")
	rp.rec.checkRunners(t.Context())
	e.waitPhase(kept, session.PhaseStopped, 10*time.Second)
	waitNoRunner(t, rp, kept)
}

// waitNoRunner waits until rp runs no runner for session id.
func waitNoRunner(t *testing.T, rp *replica, id string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, running := rp.mgr.Get(id); running {
			return fmt.Errorf("session %s: runner still running", id)
		}
		return nil
	})
}
