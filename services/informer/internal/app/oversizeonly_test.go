package app_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestOversizeFromTheStartDeleted: a session over the payload limit from
// its first version never has a state in the objects bucket (it keeps the
// last state that fitted, and none did). Its delete must still go out, with
// its identity (a consumer that counted its reference ADDED must see it
// end), and leave nothing in the bucket. TestOversizeObjectNeverBlocks
// covers a session that fitted once.
func TestOversizeFromTheStartDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(1, 1)
	h.start("a", nil)
	h.waitConverged(live, bucket, 30*time.Second)
	limit := int(h.js.Conn().MaxPayload())
	before := len(h.rawEvents(live))
	big, err := h.c.CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: "big", ProjectId: proto.String("proj-0000"), Annotations: annotations(limit + limit/2)})
	if err != nil {
		t.Fatal(err)
	}
	id := big.GetMetadata().GetId()
	added := h.waitEvent(live, before, "reference ADDED", func(e rawEvent) bool { return e.ev.GetObjectId() == id })
	if added.ev.GetType() != eventsv1.EventType_EVENT_TYPE_ADDED || !added.omitted.Object {
		t.Fatalf("first event of the big session: %v, omitted %+v; want a reference ADDED", added.ev.GetType(), added.omitted)
	}
	key := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, id)
	if _, ok := h.kvObjects(bucket)[key]; ok {
		t.Fatal("the objects bucket holds a state of a session that never fitted")
	}

	h.deleteSession(id)
	del := h.waitEvent(live, before, "DELETED", func(e rawEvent) bool {
		return e.ev.GetObjectId() == id && e.ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED
	})
	got := del.ev.GetObject().GetSession()
	if got.GetMetadata().GetId() != id || got.GetName() != "big" || got.GetProjectId() != "proj-0000" || !slices.Contains(del.omitted.Fields, "annotations") {
		t.Fatalf("DELETED: object %v (name %q, project %q), omitted %+v; want the identity, annotations trimmed",
			got.GetMetadata(), got.GetName(), got.GetProjectId(), del.omitted)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, ok := h.kvObjects(bucket)[key]; ok {
			return errors.New("the objects bucket holds the deleted session")
		}
		return nil
	})
}
