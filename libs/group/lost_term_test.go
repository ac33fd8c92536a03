package group

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// termLost is a delivery whose Term never reaches the server (the
// connection dropped it).
type termLost struct{ jetstream.Msg }

func (termLost) TermWithReason(string) error { return errors.New("nats: connection closed") }

// TestLostTermNotHandledAgain: v1 is dead-lettered but its Term is lost,
// so the server redelivers it after AckWait, by when the lane has handled
// v2. That redelivery is terminated without calling the handler: handled
// again it would run after v2 and be dead-lettered twice.
func TestLostTermNotHandledAgain(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, MinAckWait)
	q.publish(t, "x", 2)
	ctx := t.Context()
	var j seqJournal
	v1, v2 := q.fetch(t), q.fetch(t)
	s1 := seqOf(t, v1)
	w := q.worker(t, func(ctx context.Context, m Message) error {
		_ = j.record(ctx, m)
		if m.Seq == s1 {
			return Terminal(errors.New("bad spec"))
		}
		return nil
	})
	w.deliver(ctx, ctx, termLost{v1})
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := q.cfg.Stats.Snapshot(); st.DeadLettered != 1 || st.InFlight != 0 {
			return fmt.Errorf("dead-lettered %d, in flight %d: want v1 dead-lettered", st.DeadLettered, st.InFlight)
		}
		return nil
	})
	w.deliver(ctx, ctx, v2)
	q.waitSettled(t, 1)
	again := q.fetch(t) // no Term reached the server: it redelivers v1
	if md, _ := again.Metadata(); md == nil || md.Sequence.Stream != s1 {
		t.Fatalf("fetched %+v, want v1's redelivery", md)
	}
	w.deliver(ctx, ctx, again)
	waitStreamEmpty(t, q.stream)
	if st := q.cfg.Stats.Snapshot(); st.InFlight != 0 {
		t.Fatalf("%d held, want none", st.InFlight)
	}
	j.want(t, v1, v2)
	if n := q.cfg.Stats.Snapshot().DeadLettered; n != 1 {
		t.Fatalf("dead-lettered %d times, want once", n)
	}
}

// waitStreamEmpty waits until the work-queue stream holds no message:
// every one is settled on the server.
func waitStreamEmpty(t *testing.T, s jetstream.Stream) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		info, err := s.Info(t.Context())
		if err != nil {
			return fmt.Errorf("stream info: %w", err)
		}
		if n := info.State.Msgs; n != 0 {
			return fmt.Errorf("stream holds %d messages", n)
		}
		return nil
	})
}
