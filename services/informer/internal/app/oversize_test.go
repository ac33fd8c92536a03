package app_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/condition"
)

// annotations returns a JSON annotations value of about n bytes.
func annotations(n int) *string {
	return proto.String(`{"blob":"` + strings.Repeat("x", n) + `"}`)
}

// waitEvent waits until the stream holds an event after skip that match
// accepts, and returns it.
func (h *harness) waitEvent(stream string, skip int, what string, match func(rawEvent) bool) rawEvent {
	h.t.Helper()
	var found rawEvent
	testenv.Eventually(h.t, 30*time.Second, func() error {
		evs, err := h.tryRawEvents(stream)
		if err != nil {
			return err
		}
		for _, e := range evs[min(skip, len(evs)):] {
			if match(e) {
				found = e
				return nil
			}
		}
		return fmt.Errorf("no %s among %d events", what, len(evs)-skip)
	})
	return found
}

// TestOversizeObjectNeverBlocks is issue 14 point 3: a session with 600 KiB
// of annotations made every MODIFIED event (old and new object, about
// 1.2 MiB) bigger than NATS max_payload (1 MiB), every later change of it
// failed to publish, retried every 5 s forever, and its stop never reached
// runner-manager. Now: the MODIFIED goes out without the old object; a
// session bigger than the limit itself goes out as a reference event
// (consumers' Decode says ErrObjectTooLarge), is counted, logged and gets a
// condition that says why; later changes of it and of other objects flow;
// its delete goes out with the identity kept.
func TestOversizeObjectNeverBlocks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(3, 1)
	inf := h.start("a", nil)
	h.waitConverged(live, bucket, 30*time.Second)
	ctx := context.Background()
	limit := int(h.js.Conn().MaxPayload())
	isSession := func(id string, typ eventsv1.EventType) func(rawEvent) bool {
		return func(e rawEvent) bool { return e.ev.GetObjectId() == id && e.ev.GetType() == typ }
	}

	before := len(h.rawEvents(live))
	big, err := h.c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "big", ProjectId: proto.String("proj-0000"), Annotations: annotations(600 << 10)})
	if err != nil {
		t.Fatal(err)
	}
	id := big.GetMetadata().GetId()
	key := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, id)
	h.waitEvent(live, before, "ADDED of the big session", isSession(id, eventsv1.EventType_EVENT_TYPE_ADDED))

	// Old and new together are over the limit: the old object goes.
	if _, err := h.c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Stopping")}); err != nil {
		t.Fatal(err)
	}
	stop := h.waitEvent(live, before, "MODIFIED to Stopping", func(e rawEvent) bool {
		return isSession(id, eventsv1.EventType_EVENT_TYPE_MODIFIED)(e) && e.ev.GetObject().GetSession().GetPhase() == "Stopping"
	})
	if !stop.omitted.OldObject || stop.ev.GetOldObject() != nil || len(stop.ev.GetObject().GetSession().GetAnnotations()) < 600<<10 {
		t.Fatalf("stop event: omitted %+v, old object %v, annotations %d bytes; want the whole new object without the old",
			stop.omitted, stop.ev.GetOldObject() != nil, len(stop.ev.GetObject().GetSession().GetAnnotations()))
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		if got := kv[key].GetSession().GetPhase(); got != "Stopping" {
			return fmt.Errorf("kv phase %q, want Stopping", got)
		}
		return nil
	})

	// The object alone is over the limit: a reference event, a condition.
	grown, err := h.c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Annotations: annotations(limit + limit/2)})
	if err != nil {
		t.Fatal(err)
	}
	ref := h.waitEvent(live, before, "reference event", func(e rawEvent) bool { return e.ev.GetObjectId() == id && e.omitted.Object })
	if ref.ev.GetObject() != nil || ref.ev.GetVersion() == "" || ref.ev.GetProjectId() != "proj-0000" {
		t.Fatalf("reference event: %v", ref.ev)
	}
	if !events.Newer(ref.ev.GetVersion(), stop.ev.GetVersion()) && ref.ev.GetVersion() != events.VersionOf(grown) {
		t.Fatalf("reference version %s is not the grown session's", ref.ev.GetVersion())
	}
	var marked *ambientv1.Session
	testenv.Eventually(t, 30*time.Second, func() error {
		s, err := h.c.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if !strings.Contains(s.GetConditions(), condition.ReasonTooLarge) {
			return fmt.Errorf("conditions %q lack %s", s.GetConditions(), condition.ReasonTooLarge)
		}
		marked = s
		return nil
	})
	if condition.Needed(marked, true, condition.Message(int64(limit))) {
		t.Fatalf("condition written is not the one Needed expects: %s", marked.GetConditions())
	}
	// KV keeps the last state that fitted: a consumer reading it never sees
	// a stub.
	if got := h.kvObjects(bucket)[key].GetSession(); got.GetPhase() != "Stopping" || len(got.GetAnnotations()) > limit {
		t.Fatalf("kv holds phase %q with %d bytes of annotations, want the last state that fitted", got.GetPhase(), len(got.GetAnnotations()))
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := inf.metric("informer_events_omitted_total", `omitted="object"`); got < 1 {
			return fmt.Errorf("omitted object metric = %v", got)
		}
		if got := inf.metric("informer_events_omitted_total", `omitted="old_object"`); got < 1 {
			return fmt.Errorf("omitted old_object metric = %v", got)
		}
		return nil
	})

	// Other objects flow, and so do later changes of the big one.
	small := h.sessionIDs()[0]
	h.updateSession(small, "other objects flow")
	h.waitEvent(live, before, "change of another session", func(e rawEvent) bool {
		return e.ev.GetObjectId() == small && e.ev.GetObject().GetSession().GetPrompt() == "other objects flow"
	})
	if _, err := h.c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Annotations: annotations(10)}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent(live, before, "complete event of the shrunk session", func(e rawEvent) bool {
		return e.ev.GetObjectId() == id && e.ev.GetObject() != nil && len(e.ev.GetObject().GetSession().GetAnnotations()) < 100
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		s, err := h.c.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if strings.Contains(s.GetConditions(), condition.ReasonTooLarge) {
			return errors.New("condition not removed after the session shrank")
		}
		return nil
	})

	// Grown again and deleted: the delete goes out, identity kept.
	regrow := len(h.rawEvents(live))
	if _, err := h.c.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Annotations: annotations(2 * limit)}); err != nil {
		t.Fatal(err)
	}
	h.waitEvent(live, regrow, "second reference event", func(e rawEvent) bool {
		return e.ev.GetObjectId() == id && e.omitted.Object
	})
	h.deleteSession(id)
	del := h.waitEvent(live, before, "DELETED of the big session", isSession(id, eventsv1.EventType_EVENT_TYPE_DELETED))
	if got := del.ev.GetObject().GetSession(); got.GetMetadata().GetId() != id || got.GetName() != "big" || len(del.omitted.Fields) == 0 {
		t.Fatalf("DELETED: object %v, omitted %+v; want the identity with fields trimmed", got.GetMetadata(), del.omitted)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, ok := h.kvObjects(bucket)[key]; ok {
			return errors.New("kv still holds the deleted session")
		}
		return nil
	})
	if got := inf.metric("informer_events_unpublishable_total"); got > 0 {
		t.Errorf("unpublishable = %v, want 0: every version went out in some form", got)
	}
}
