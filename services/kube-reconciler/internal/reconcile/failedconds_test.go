package reconcile

import (
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
)

// TestFailureReportKeepsEventsPublished: the real UpdateSessionStatus
// replaces the whole conditions list, so the report of a session that
// cannot be reconciled (phase Failed, Reconciled=False) must carry the
// informer's EventsPublished along, or each report erases it and the
// informer writes it back. The echo of the report writes nothing.
func TestFailureReportKeepsEventsPublished(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, _ := newReconciler(t, store)
	api := testenv.API(t)
	cl := testenv.APIClient(t, api)
	r.cfg.API, r.cfg.Source = cl, cl
	ctx := t.Context()
	s, err := cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", Prompt: proto.String("p"), Labels: proto.String(`{"a": 1}`)})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	published := `[{"type":"Ready","status":"True"},{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge","message":"m"}]`
	if s, err = cl.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: proto.String(published)}); err != nil {
		t.Fatal(err)
	}
	handle := func(s *ambientv1.Session) {
		t.Helper()
		put(t, store, s)
		if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, s, nil, time.Now()), Attempt: 1}); err != nil {
			t.Fatalf("Handle of an invalid session = %v; want nil (acked, reported on the session)", err)
		}
	}
	handle(s)
	got, err := cl.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	c := reconciledCondition(t, got)
	if session.PhaseOf(got) != session.PhaseFailed || c.Status != session.StatusFalse || c.Reason != ReasonInvalidSpec {
		t.Fatalf("phase %q, Reconciled %+v; want Failed, False %s", got.GetPhase(), c, ReasonInvalidSpec)
	}
	if e, ok := session.FindCondition(got.GetConditions(), session.ConditionEventsPublished); !ok || e.Reason != session.ReasonObjectTooLarge {
		t.Errorf("informer's EventsPublished lost by the report: conditions %s", got.GetConditions())
	}
	if _, ok := session.FindCondition(got.GetConditions(), "Ready"); ok {
		t.Errorf("Ready, of a CR the failed session does not have, kept: conditions %s", got.GetConditions())
	}

	calls := api.CallCount("/ambient.v1.SessionService/UpdateSessionStatus")
	handle(got) // the echo of the report
	if n := api.CallCount("/ambient.v1.SessionService/UpdateSessionStatus"); n != calls {
		t.Errorf("the report's echo wrote %d times, want none", n-calls)
	}
}
