package app_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestAPIClockStepBackLosesNoUpdate: the real server stamps updated_at
// from its replica's wall clock, which NTP can step back and which another
// replica may run behind. An update stamped an hour before the previous one
// is still the newer state: it comes after it on the watch stream. The
// informer used to compare the two stamps, drop the update as stale and
// leave consumers on the old state until the next relist (RESYNC_PERIOD;
// never here, where resync is off).
func TestAPIClockStepBackLosesNoUpdate(t *testing.T) {
	t.Parallel()
	var behind atomic.Int64 // how far the API's clock is behind, in ns
	h := newHarness(t, memapi.WithClock(func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }))
	inf := h.start("a", nil)
	h.waitLeaderReady(inf, 30*time.Second)
	id := h.createSession("clock").GetMetadata().GetId()
	// The CREATED event proves the watch registered and brings the
	// confirming relist at once: after it, the stream alone carries the
	// changes (resync is off), and the updates below meet no list.
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := inf.metric("informer_relists_total", `resource="sessions"`); n < 2 {
			return fmt.Errorf("sessions listed %v times, want the confirming relist", n)
		}
		return nil
	})
	h.updateSession(id, "before the step")
	waitPublishedPrompt(t, h, id, "before the step", 30*time.Second)

	behind.Store(int64(time.Hour))
	h.updateSession(id, "after the step")
	waitPublishedPrompt(t, h, id, "after the step", 15*time.Second)
	if n := inf.metric("informer_watch_stale_total", `resource="sessions"`); n != 0 {
		t.Errorf("informer_watch_stale_total{resource=\"sessions\"} = %v, want 0", n)
	}
	if n := inf.metric("informer_watch_clock_backward_total", `resource="sessions"`); n != 1 {
		t.Errorf("informer_watch_clock_backward_total{resource=\"sessions\"} = %v, want 1", n)
	}
}

// waitPublishedPrompt waits until the objects bucket holds session id with
// prompt, and the stream's last event of it is the MODIFIED that brought it.
func waitPublishedPrompt(t *testing.T, h *harness, id, prompt string, timeout time.Duration) {
	t.Helper()
	key := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, id)
	testenv.Eventually(t, timeout, func() error {
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		s, _ := events.Message(kv[key]).(*ambientv1.Session)
		if got := s.GetPrompt(); got != prompt {
			return fmt.Errorf("objects bucket: session prompt %q, want %q", got, prompt)
		}
		evs, err := h.tryStreamEvents(live)
		if err != nil {
			return err
		}
		var last *eventsv1.ResourceEvent
		for _, ev := range evs {
			if ev.GetObjectId() == id {
				last = ev
			}
		}
		s, _ = events.Message(last.GetObject()).(*ambientv1.Session)
		if last.GetType() != eventsv1.EventType_EVENT_TYPE_MODIFIED || s.GetPrompt() != prompt {
			return fmt.Errorf("last event of the session: %v with prompt %q, want MODIFIED with %q", last.GetType(), s.GetPrompt(), prompt)
		}
		return nil
	})
}
