package group

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestCoalescedBatchStopsAtLostEvent: with Config.Coalesce, v2 and v4
// queue behind v1's running handler while v3 was lost in transit (a
// consumer re-created in a rebalance) and comes back later as a
// redelivery. The lane must not coalesce over the gap: handled as v4 and
// acked with v2, v3's redelivery would then run after v4. It handles v2,
// and v4 waits for v3, with which it is coalesced.
func TestCoalescedBatchStopsAtLostEvent(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.cfg.Coalesce = true
	q.publish(t, "x", 4)
	coalescedBatchStopsAtLostThird(t, q)
}

// coalescedBatchStopsAtLostThird runs the four events of one object q
// holds through a coalescing worker with the third lost in transit: v2
// is handled, and v4 waits for v3's redelivery and is coalesced with it.
func coalescedBatchStopsAtLostThird(t *testing.T, q *workQueue) {
	t.Helper()
	ctx := t.Context()
	var j seqJournal
	h, started, release := firstCallHeld(&j)
	w := q.worker(t, h)
	v := []jetstream.Msg{q.fetch(t), q.fetch(t), q.fetch(t), q.fetch(t)}
	w.deliver(ctx, ctx, v[0])
	<-started
	w.deliver(ctx, ctx, v[1])
	w.deliver(ctx, ctx, v[3]) // v[2] lost in transit
	close(release)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := q.cfg.Stats.Snapshot().Acked; n < 2 {
			return fmt.Errorf("acked %d, want v1 and v2 settled", n)
		}
		return nil
	})
	w.deliver(ctx, ctx, v[2]) // its redelivery
	q.waitSettled(t, 4)
	j.want(t, v[0], v[1], v[3])
	if st := q.cfg.Stats.Snapshot(); st.Coalesced != 1 || st.Reordered != 1 {
		t.Fatalf("coalesced %d, reordered %d: want v3 coalesced into v4, which waited for it", st.Coalesced, st.Reordered)
	}
}

// TestCoalescedBatchSpansEventSettledHere: an event between two queued
// ones that this member handled already (its ack unconfirmed, so it is
// still in the stream) is no gap, and the batch is coalesced whole.
func TestCoalescedBatchSpansEventSettledHere(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.cfg.Coalesce = true
	q.publish(t, "x", 4)
	ctx := t.Context()
	var j seqJournal
	h, started, release := firstCallHeld(&j)
	w := q.worker(t, h)
	v := []jetstream.Msg{q.fetch(t), q.fetch(t), q.fetch(t), q.fetch(t)}
	w.mu.Lock()
	w.handled[seqOf(t, v[2])] = settledHere{at: time.Now()} // v3 handled before, its ack lost
	w.mu.Unlock()
	w.deliver(ctx, ctx, v[0])
	<-started
	w.deliver(ctx, ctx, v[1])
	w.deliver(ctx, ctx, v[3]) // a gap in the consumer's numbering: the lane looks
	close(release)
	q.waitSettled(t, 3)
	j.want(t, v[0], v[3])
	if n := q.cfg.Stats.Snapshot().Coalesced; n != 1 {
		t.Fatalf("coalesced %d, want v2 coalesced into v4", n)
	}
}

// firstCallHeld returns a handler that records each call in j and holds
// the first one, after signalling started, until release is closed (or
// its ctx ends), so that a test can queue messages behind it.
func firstCallHeld(j *seqJournal) (h Handler, started <-chan struct{}, release chan struct{}) {
	start, release := make(chan struct{}, 1), make(chan struct{})
	first := true // the lane's calls follow one another
	h = func(ctx context.Context, m Message) error {
		if first {
			first = false
			start <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return j.record(ctx, m)
	}
	return h, start, release
}
