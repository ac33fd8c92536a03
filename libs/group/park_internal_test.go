package group

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestParkedLaneMovedPublishesAgain: a parked lane whose partition moves
// away while it waits out its backoff publishes its event again for the
// group (the server no longer has it) and ends: nothing held, nothing
// parked, no slot taken.
func TestParkedLaneMovedPublishesAgain(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.cfg.MaxInFlight, q.cfg.Coalesce, q.cfg.ParkFailures = 1, true, true
	q.cfg.Backoff = []time.Duration{time.Hour}
	q.publish(t, "x", 1)
	w := q.worker(t, func(context.Context, Message) error { return errors.New("broken") })
	ctx := t.Context()
	first := q.fetch(t)
	w.deliver(ctx, ctx, first)
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := q.cfg.Stats.Snapshot(); st.Parked != 1 || st.ParkedObjects != 1 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want x parked", st)
		}
		return nil
	})
	q.own.set(nil, 2) // every partition moves away
	testenv.Eventually(t, 10*time.Second, func() error {
		w.mu.Lock()
		lanes := len(w.lanes)
		w.mu.Unlock()
		if st := q.cfg.Stats.Snapshot(); st.ParkedObjects != 0 || lanes != 0 || len(w.slots) != 0 {
			return fmt.Errorf("stats %+v, %d lanes, %d slots, want the lane ended", st, lanes, len(w.slots))
		}
		return nil
	})
	again := q.fetch(t)
	if g := again.Headers().Get(HeaderReplayGroup); g != "g" || string(again.Data()) != string(first.Data()) {
		t.Fatalf("republished copy: group %q, same data %v", g, string(again.Data()) == string(first.Data()))
	}
}
