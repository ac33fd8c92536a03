package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// startStandbyRecreatingStream starts informer "b" once the events stream
// is deleted, and waits until its start-up set-up (bus.EnsureStream) has
// created the stream again and b stands by: the leader's stream was
// recreated under its term.
func (h *harness) startStandbyRecreatingStream() {
	h.t.Helper()
	b := h.start("b", nil)
	testenv.Eventually(h.t, 30*time.Second, func() error {
		if _, err := h.js.Stream(h.t.Context(), live); err != nil {
			return fmt.Errorf("stream not recreated by b's start-up yet: %w", err)
		}
		if b.metric("informer_lease_leader") != 0 {
			return fmt.Errorf("b not up as a standby")
		}
		return nil
	})
}

// loseStreamWhileStopped stops a and then deletes the events stream: it
// is lost while no informer runs, the objects bucket survives.
func (h *harness) loseStreamWhileStopped(a *informer) {
	h.t.Helper()
	if err := a.stop(); err != nil {
		h.t.Fatal(err)
	}
	h.deleteEventsStream()
}

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
	a, _ := h.startSyncedLeader(nil)
	h.deleteEventsStream()
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
	a, _ := h.startSyncedLeader(nil)
	h.loseStreamWhileStopped(a)
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

// TestSessionDeletedWhileStreamLostIsAnnouncedDeleted: the events stream is
// lost while no informer runs, the objects bucket survives, and a session
// that consumers hold (announced in the lost stream) is deleted from the
// API meanwhile. Consumers keep what the lost stream told them (runner
// processes, AgenticSessions): the recreated stream must tell them the
// session is gone. Before, entries older than the stream were loaded
// without their state (as never published): the session had no published
// state to announce a delete from, and nothing was published for it.
func TestSessionDeletedWhileStreamLostIsAnnouncedDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, evs := h.startSyncedLeader(nil)
	var gone string
	for _, ev := range evs {
		if ev.GetResource() == eventsv1.Resource_RESOURCE_SESSIONS {
			gone = ev.GetObjectId()
			break
		}
	}
	h.loseStreamWhileStopped(a)
	h.deleteSession(gone)
	b := h.start("b", nil)
	h.waitLeaderReady(b, 30*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("objects bucket still holds the deleted session: %v", h.kvObjects(bucket)[events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, gone)] != nil)
		}
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		evs, err := h.tryStreamEvents(live)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.GetObjectId() == gone && ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
				return nil
			}
		}
		return fmt.Errorf("no DELETED of session %s (deleted while the stream was lost) in the recreated stream's %d events", gone, len(evs))
	})
}

// TestEventsStreamRecreatedByStandbyAnnouncesTheState: the events
// stream alone is lost while a leads; before a publishes anything, a
// standby (b) starts, and its start-up set-up creates the stream again
// (bus.EnsureStream). a's next publish lands in that stream (no ErrGone,
// so no new term and no LoadSince): only what changes is published into
// it, and the objects that did not change are never announced there while
// a's term lasts. A consumer group created on the new stream misses them.
// a must notice the new stream and start a term over it, which announces
// every object (TestEventsStreamAloneLostAnnouncesTheState).
func TestEventsStreamRecreatedByStandbyAnnouncesTheState(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(nil)
	h.deleteEventsStream()
	h.startStandbyRecreatingStream()
	id := h.createSession("after-recreate").GetMetadata().GetId()
	testenv.Eventually(t, 30*time.Second, func() error { return h.published(id) })
	if !a.isLeader() {
		t.Fatalf("a no longer leads")
	}
	t.Logf("a's terms: %v", a.metric("informer_lease_terms_total"))
	// Every object of the API must be in the recreated stream.
	h.waitConverged(live, bucket, 30*time.Second)
}

// TestEventsStreamRecreatedUnderTheLeaderIsNoticedOnAConflict: as
// TestEventsStreamRecreatedByStandbyAnnouncesTheState, with the periodic
// look at the stream and the KV audit off: the leader's next change of an
// object it published before expects a sequence the new stream's subject
// never had. That conflict (the subject empty) makes it look at the
// stream, find it created again, and start a term over it that announces
// every object. Before, it adopted "no event" and published only that
// change.
func TestEventsStreamRecreatedUnderTheLeaderIsNoticedOnAConflict(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(map[string]string{config.EnvAuditInterval: "0"}, app.WithStreamCheck(0))
	h.deleteEventsStream()
	h.startStandbyRecreatingStream()
	h.updateSession(h.sessionIDs()[0], "after-recreate")
	h.waitConverged(live, bucket, 30*time.Second)
	if !a.isLeader() {
		t.Errorf("a no longer leads: the new term is a's")
	}
}
