package app_test

import (
	"testing"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// TestEventsStreamAloneLostAnnouncesTheState: only the events stream is
// lost (deleted by mistake, or lost on its peers) while the objects bucket
// survives. The recreated stream must carry the whole state again: a
// consumer group created on it, or one rebuilding from it, must not miss
// the objects that did not change since. Before, the new term diffed the
// API against the intact bucket and published only the session created
// after the loss.
func TestEventsStreamAloneLostAnnouncesTheState(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(3, 1)
	a := h.start("a", nil)
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	if err := h.js.DeleteStream(t.Context(), live); err != nil {
		t.Fatal(err)
	}
	h.waitRecreated(a, "after-delete")
	h.waitConverged(live, bucket, 30*time.Second)
	if n := a.metric("informer_kv_conflicts_total"); n != 0 {
		t.Errorf("informer_kv_conflicts_total = %v, want 0: the rewrites expect the entries' revisions", n)
	}
}

// TestEventsStreamLostWhileStoppedAnnouncesTheState: the events stream is
// lost while no informer runs, the objects bucket survives. The next
// informer creates the stream at start and publishes every object into
// it, as ADDED.
func TestEventsStreamLostWhileStoppedAnnouncesTheState(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(3, 1)
	a := h.start("a", nil)
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := h.js.DeleteStream(t.Context(), live); err != nil {
		t.Fatal(err)
	}
	b := h.start("b", nil)
	h.waitLeaderReady(b, 30*time.Second)
	evs := h.waitConverged(live, bucket, 30*time.Second)
	for _, ev := range evs {
		if ev.GetType() != eventsv1.EventType_EVENT_TYPE_ADDED {
			t.Errorf("%v of %s in the new stream, want only ADDED", ev.GetType(), ev.GetObjectId())
		}
	}
	if n := b.metric("informer_publish_conflicts_total"); n != 0 {
		t.Errorf("informer_publish_conflicts_total = %v, want 0", n)
	}
}
