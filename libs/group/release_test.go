package group

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReleasedLaneGivesBackQueued: when the member stops or the object's
// partition moves, a lane gives back (naks) every message it holds, the
// running one and those queued behind it, so the server hands them out
// again at once (after releaseDelay for a move), not after AckWait (30 s
// here, longer than the fetches below wait). In a running group the old
// owner's consumer is usually deleted too (leave, pcgroups' re-creation),
// which frees them as well; the nak is what frees them when it is not
// (a leave that failed, a consumer re-created unchanged).
func TestReleasedLaneGivesBackQueued(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"stop", "move"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			q := newWorkQueue(t, 30*time.Second)
			q.publish(t, "x", 3)
			started := make(chan struct{}, 1)
			var j seqJournal
			w := q.worker(t, func(ctx context.Context, m Message) error {
				if len(j.snapshot()) == 0 { // the first holds the lane until released
					started <- struct{}{}
					<-ctx.Done()
					return ctx.Err()
				}
				return j.record(ctx, m)
			})
			runCtx, stop := context.WithCancel(t.Context())
			hctx, cancelHandlers := context.WithCancel(t.Context())
			defer stop()
			defer cancelHandlers()
			var seqs []uint64
			for i := range 3 {
				m := q.fetch(t)
				seqs = append(seqs, seqOf(t, m))
				w.deliver(runCtx, hctx, m)
				if i == 0 {
					<-started
				}
			}
			if n := q.cfg.Stats.Snapshot().InFlight; n != 3 {
				t.Fatalf("in flight %d, want one running and two queued", n)
			}
			if how == "stop" {
				stop() // as Run's stop: intake ends, then the handlers' grace
				cancelHandlers()
			} else {
				q.own.set(nil, 2)
			}
			testenv.Eventually(t, 10*time.Second, func() error {
				if n := q.cfg.Stats.Snapshot().InFlight; n != 0 {
					return fmt.Errorf("in flight %d, want the lane released", n)
				}
				return nil
			})
			var again []uint64
			for range 3 {
				m := q.fetch(t)
				if md, err := m.Metadata(); err != nil || md.NumDelivered != 2 {
					t.Fatalf("fetched %+v (%v), want a redelivery", md, err)
				}
				again = append(again, seqOf(t, m))
			}
			slices.Sort(again)
			if !slices.Equal(again, seqs) {
				t.Fatalf("redelivered %v, want %v", again, seqs)
			}
			if got := j.snapshot(); len(got) != 0 {
				t.Fatalf("handled %v after the lane was released", got)
			}
			if st := q.cfg.Stats.Snapshot(); st.Acked != 0 || st.DeadLettered != 0 {
				t.Fatalf("stats %+v, want nothing settled", st)
			}
		})
	}
}
