package reconcile

import (
	"errors"
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

// TestDeadLetterReportKeepsNewerConditions: a dead-lettered event carries
// the session as it was when the event was sent, which may be minutes (all
// the tries and their backoff) behind the API. The report merges its
// Reconciled=False into the session's conditions as the API holds them
// now: built on the event's copy, it wrote that copy's conditions back,
// dropping a condition another writer added since and putting back an old
// value of one it changed.
func TestDeadLetterReportKeepsNewerConditions(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, _ := newReconciler(t, store)
	cl := testenv.APIClient(t, testenv.API(t))
	r.cfg.API, r.cfg.Source = cl, cl
	ctx := t.Context()
	s, err := cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", Prompt: proto.String("p")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	stale := `[{"type":"Scheduled","status":"False","reason":"Waiting"}]`
	if s, err = cl.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: proto.String(stale)}); err != nil {
		t.Fatal(err)
	}
	ev := events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, s, nil, time.Now())
	// Written while the event's tries ran: newer than what it carries.
	newer := `[{"type":"Scheduled","status":"True","reason":"Quota"},{"type":"Audited","status":"True"}]`
	if _, err := cl.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Conditions: proto.String(newer)}); err != nil {
		t.Fatal(err)
	}

	r.ReportDeadLetter(ctx, group.Message{Event: ev, Attempt: 5}, "max deliveries", errors.New(`namespaces "ambient-code" not found`))

	got, err := cl.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	conds, err := session.ParseConditions(got.GetConditions())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Scheduled": "True Quota", "Audited": "True ", ConditionReconciled: "False " + ReasonReconcileFailed}
	for typ, w := range want {
		c, ok := conds.Get(typ)
		if g := c.Status + " " + c.Reason; !ok || g != w {
			t.Errorf("condition %s = %q (present %v), want %q; conditions %s", typ, g, ok, w, got.GetConditions())
		}
	}
	if len(conds) != len(want) {
		t.Errorf("%d conditions, want %d: %s", len(conds), len(want), got.GetConditions())
	}
}
