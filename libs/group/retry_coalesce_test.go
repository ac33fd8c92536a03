package group_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRetryTakesNewerEvents: with Coalesce, an object's events that arrive
// while its handler call fails are part of the retry: the retry is one
// call with the newest (its Attempt going on from the failed call's), and
// every event is acked after it. Before, the retry handled the stale event
// again and the newer ones only after it succeeded (or used up its
// tries): calls v1 (failed), v1, v6.
func TestRetryTakesNewerEvents(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	started := make(chan struct{}, 1) // v1's first call started
	release := make(chan struct{})
	var mu sync.Mutex
	var got []group.Message // every call; guarded by mu
	cfg := testConfig("a")
	cfg.Coalesce = true
	cfg.MaxDeliver = 5
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		ok := !(version(m) == 1 && m.Attempt == 1)
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: ok})
		if ok {
			return nil
		}
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return errors.New("backend down")
	})
	waitMembers(t, js, "a")
	const queued = 5
	queueBehindFirst(t, js, cfg, started, queued)
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != queued+1 {
			return fmt.Errorf("%d of %d acked", n, queued+1)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	mu.Lock()
	defer mu.Unlock()
	var calls []string
	for _, m := range got {
		calls = append(calls, fmt.Sprintf("v%d attempt %d coalesced %d", version(m), m.Attempt, m.Coalesced))
	}
	want := []string{"v1 attempt 1 coalesced 0", fmt.Sprintf("v%d attempt 2 coalesced %d", queued+1, queued)}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("calls %q, want %q", calls, want)
	}
	if st := cfg.Stats.Snapshot(); st.Coalesced != queued || st.Retried != 1 || st.DeadLettered != 0 || st.InFlight != 0 {
		t.Fatalf("stats = %+v, want %d coalesced, 1 retry, nothing dead-lettered or held", st, queued)
	}
	checkOrder(t, j.snapshot())
}

// TestRetryTakingNewerEventsStillDeadLetters: an object whose events keep
// coming and whose handler keeps failing still reaches the DLQ after
// MaxDeliver tries in a row, every event taken into the retries with it:
// taking newer events does not start the count again.
func TestRetryTakingNewerEventsStillDeadLetters(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	cfg.Coalesce = true
	cfg.MaxDeliver = 3
	var mu sync.Mutex
	var calls []string // guarded by mu
	startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		v := version(m)
		mu.Lock()
		calls = append(calls, fmt.Sprintf("v%d attempt %d", v, m.Attempt))
		mu.Unlock()
		if v > cfg.MaxDeliver {
			return nil
		}
		if m.Attempt < uint64(cfg.MaxDeliver) {
			// A newer event of the object, held before the call fails,
			// so that the retry takes it.
			held := cfg.Stats.Snapshot().InFlight
			publish(t, js, "x", v+1)
			testenv.Eventually(t, 15*time.Second, func() error {
				if n := cfg.Stats.Snapshot().InFlight; n <= held {
					return fmt.Errorf("%d held, want more than %d", n, held)
				}
				return nil
			})
		}
		return errors.New("backend down")
	})
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.DeadLettered != 3 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want 3 dead letters and nothing held", st)
		}
		return nil
	})
	publish(t, js, "x", 4)
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.Acked != 1 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want v4 acked", st)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"v1 attempt 1", "v2 attempt 2", "v3 attempt 3", "v4 attempt 1"}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("calls %q, want %q: the events taken into the retries dead-lettered together after MaxDeliver tries in a row", calls, want)
	}
}
