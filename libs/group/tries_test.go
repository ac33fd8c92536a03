package group_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRestartedMemberGoesOnCountingTries: a member dies during its first
// try of a message that keeps failing, and a new instance with the same
// member name (a restarted pod) gets the message again once AckWait has
// passed. It reuses the dead instance's consumer, whose delivery count
// shows the earlier try, so Message.Attempt goes on from 2, the retry
// schedule resumes where that try left it (Backoff[1], not Backoff[0]),
// and the message is dead-lettered after MaxDeliver tries in all, not
// MaxDeliver more.
func TestRestartedMemberGoesOnCountingTries(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	cfg.MaxDeliver = 4
	// Backoff[0] outlasts the test: a schedule that started over on the
	// new instance would wait it out before the second retry.
	cfg.Backoff = []time.Duration{time.Minute, 20 * time.Millisecond}
	var mu sync.Mutex
	var before, after []uint64 // Message.Attempt of each call, per instance; guarded by mu
	started := make(chan struct{}, 1)
	dead := startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		mu.Lock()
		before = append(before, m.Attempt)
		mu.Unlock()
		started <- struct{}{}
		<-ctx.Done() // the instance dies during this try
		return ctx.Err()
	})
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1)
	waitSignal(t, started, "first try never started")
	dead.nc.Close() // abrupt: no ack, no release, no leave

	restarted := cfg
	restarted.Stats = &group.Stats{}
	startMember(t, srv, restarted, func(_ context.Context, m group.Message) error {
		mu.Lock()
		after = append(after, m.Attempt)
		mu.Unlock()
		return errors.New("backend down")
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := restarted.Stats.Snapshot().DeadLettered; n != 1 {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("not dead-lettered yet: attempts %v before the restart, %v after", before, after)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(before, []uint64{1}) || !slices.Equal(after, []uint64{2, 3, 4}) {
		t.Fatalf("attempts %v before the restart, %v after; want [1] and [2 3 4]", before, after)
	}
	letters := dlqMessages(t, js)
	if len(letters) != 1 {
		t.Fatalf("dlq holds %d letters, want 1", len(letters))
	}
	if got := letters[0].Header.Get(group.HeaderDLQAttempts); got != "4" {
		t.Fatalf("dead letter attempts = %q, want 4 (MaxDeliver, counting the dead instance's try)", got)
	}
}
