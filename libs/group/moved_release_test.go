package group

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestSuccessAfterMoveReleased: a handler that returns nil after its
// object's partition moved away (it ignored the cancellation) has its
// message released for the partition's next owner, not acked. Here the
// partition comes back to the same member before anyone else took the
// message, and the member must handle the redelivery again. Had the lane
// tried to ack instead, that ack (under the lane's ctx, cancelled by the
// move) could not reach the server, the lane would drop the message
// without releasing it (not redelivered before AckWait, 30 s here, so the
// fetch below finds nothing) and remember it as handled, so that its
// redelivery would be acked unhandled: lost.
func TestSuccessAfterMoveReleased(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.publish(t, "x", 1)
	ctx := t.Context()
	var j seqJournal
	started, release := make(chan struct{}, 1), make(chan struct{})
	w := q.worker(t, func(ctx context.Context, m Message) error {
		if len(j.snapshot()) == 0 { // the first call outlives the move, deaf to ctx
			started <- struct{}{}
			<-release
		}
		return j.record(ctx, m)
	})
	first := q.fetch(t)
	w.deliver(ctx, ctx, first)
	<-started
	all := q.own.partitions()
	q.own.set(nil, 2) // every partition moves away
	close(release)    // and the handler succeeds after that
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := q.cfg.Stats.Snapshot(); st.InFlight != 0 {
			return fmt.Errorf("in flight %d, want the message released", st.InFlight)
		}
		return nil
	})
	if n := q.cfg.Stats.Snapshot().Acked; n != 0 {
		t.Fatalf("acked %d after the partition moved, want 0", n)
	}

	q.own.set(all, 3) // the partitions come back
	again := q.fetch(t)
	if md, _ := again.Metadata(); md == nil || md.NumDelivered != 2 {
		t.Fatalf("second fetch is not the redelivery: %+v", md)
	}
	w.deliver(ctx, ctx, again)
	q.waitSettled(t, 1)     // the redelivery handled and acked
	j.want(t, first, first) // once before the move, once after it came back
}
