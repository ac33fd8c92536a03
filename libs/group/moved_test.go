package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// objectIn returns an object id whose partition (of n) satisfies keep.
func objectIn(t *testing.T, n int, keep func(p int) bool) string {
	t.Helper()
	for i := range 1000 {
		id := fmt.Sprintf("obj-%03d", i)
		if keep(group.PartitionOf(id, n)) {
			return id
		}
	}
	t.Fatal("no object id hashes to the wanted partitions")
	return ""
}

// TestHandlerCancelledWhenPartitionMoves (issue 14, review item): a
// handler still running when its partition moves to a joining member sees
// its ctx cancelled with ErrPartitionMoved, its message is neither acked
// nor retried by the old owner, and the new owner handles it.
func TestHandlerCancelledWhenPartitionMoves(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	// a alone owns 0..7; when b joins, b takes 4..7.
	id := objectIn(t, 8, func(p int) bool { return p >= 4 })
	started := make(chan struct{}, 1) // the slow call started
	cause := make(chan error, 1)      // why its ctx ended
	cfgA := testConfig("a")
	cfgA.StopGrace = 10 * time.Second // a stop must not be what cancels it
	startMember(t, srv, cfgA, func(ctx context.Context, m group.Message) error {
		if m.Event.GetObjectId() != id {
			return nil
		}
		started <- struct{}{}
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	})
	waitMembers(t, js, "a")
	publish(t, js, id, 1)
	waitSignal(t, started, "slow handler never started")

	var j journal
	joined := time.Now()
	startMember(t, srv, testConfig("b"), func(_ context.Context, m group.Message) error {
		j.add(call{member: "b", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	select {
	case err := <-cause:
		if !errors.Is(err, group.ErrPartitionMoved) {
			t.Fatalf("handler ctx cause = %v, want ErrPartitionMoved", err)
		}
		t.Logf("handler cancelled %s after b started", time.Since(joined).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("handler ctx not cancelled after its partition moved")
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if j.successes() != 1 {
			return fmt.Errorf("b handled %d events, want the moved one", j.successes())
		}
		return nil
	})
	if st := cfgA.Stats.Snapshot(); st.Acked != 0 || st.Retried != 0 || st.DeadLettered != 0 {
		t.Fatalf("old owner's stats = %+v, want no ack, retry or dead letter", st)
	}
}
