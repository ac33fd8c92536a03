package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestLostEntryAnnouncedByReferenceThenDeleted: the events stream is lost
// alone while no informer runs; a session the lost stream carried (its KV
// entry is the lost stream's) grows over the payload limit meanwhile. The
// first term announces it in the recreated stream as a reference ADDED;
// its KV write is skipped (over the limit), so the key keeps the lost
// stream's entry. That term ends; the API deletes the session; the next
// term's tail brings the reference (no state that fitted in the new
// stream) and LoadLost drops the entry's state: nothing announces the
// delete, and consumers of the new stream, which got the ADDED, keep the
// session for ever.
func TestLostEntryAnnouncedByReferenceThenDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(2, 1)
	a := h.start("a", nil)
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	id := h.sessionIDs()[0]
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := h.js.DeleteStream(t.Context(), live); err != nil {
		t.Fatal(err)
	}
	limit := int(h.js.Conn().MaxPayload())
	if _, err := h.api.Sessions().UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id, Annotations: annotations(limit + limit/2)}); err != nil {
		t.Fatal(err)
	}
	b := h.start("b", nil)
	h.waitLeaderReady(b, 30*time.Second)
	added := h.waitEvent(live, 0, "reference ADDED of the grown session", func(e rawEvent) bool { return e.ev.GetObjectId() == id })
	if added.ev.GetType() != eventsv1.EventType_EVENT_TYPE_ADDED || !added.omitted.Object {
		t.Fatalf("first event of the grown session in the new stream: %v, omitted %+v; want a reference ADDED", added.ev.GetType(), added.omitted)
	}
	// Every other session's entry is rewritten into the new stream.
	other := h.sessionIDs()[1]
	h.waitEvent(live, 0, "ADDED of the other session", func(e rawEvent) bool { return e.ev.GetObjectId() == other })
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	h.deleteSession(id)
	c := h.start("c", nil)
	h.waitLeaderReady(c, 30*time.Second)
	testenv.Eventually(t, 30*time.Second, func() error {
		evs, err := h.tryRawEvents(live)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.ev.GetObjectId() == id && e.ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
				return nil
			}
		}
		return fmt.Errorf("no DELETED of session %s (announced by a reference ADDED in the recreated stream, then deleted) among %d events", id, len(evs))
	})
}
