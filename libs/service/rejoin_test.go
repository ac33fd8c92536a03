package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// rejoinWait is one wait of the rejoin backoff and the error before it.
type rejoinWait struct {
	err error
	d   time.Duration
}

// TestConsumeRejoinsFromMinAfterHealthyRun: a member that waited long
// for the events stream has its backoff at the maximum; once it has been
// in its group, a group that stops (deleted here) is rejoined after about
// the minimum wait, not the maximum left over from before.
func TestConsumeRejoinsFromMinAfterHealthyRun(t *testing.T) {
	t.Parallel()
	const minWait, maxWait = 5 * time.Millisecond, 200 * time.Millisecond
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	cfg, err := group.Config{Group: "svc-rejoin", Member: "m-0", MemberTTL: time.Second, AckWait: 2 * time.Second, StopGrace: time.Second, Stats: &group.Stats{}}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var waits []rejoinWait // guarded by mu
	waited := func() []rejoinWait {
		mu.Lock()
		defer mu.Unlock()
		return append([]rejoinWait(nil), waits...)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	// Owned by the test: ends with ctx, awaited below and by Cleanup.
	go func() {
		done <- service.ConsumeWith(ctx, js, cfg, func(context.Context, group.Message) error { return nil }, testLogger(), minWait, maxWait,
			func(err error, d time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				waits = append(waits, rejoinWait{err, d})
			})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consume = %v, want nil once stopped", err)
		}
	})

	// No events stream: the waits grow to the maximum.
	testenv.Eventually(t, 10*time.Second, func() error {
		w := waited()
		if len(w) == 0 || w[len(w)-1].d < maxWait*3/4 {
			return fmt.Errorf("waits %v, want one at the maximum %s", w, maxWait)
		}
		return nil
	})
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, 0); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if !cfg.Stats.Snapshot().Joined {
			return errors.New("member not joined")
		}
		return nil
	})
	before := len(waited())
	if err := pcgroups.DeleteElastic(t.Context(), js, events.StreamName, cfg.Group); err != nil {
		t.Fatalf("delete group: %v", err)
	}
	var next rejoinWait
	testenv.Eventually(t, 20*time.Second, func() error {
		w := waited()
		if len(w) == before {
			return errors.New("no rejoin wait after the group was deleted")
		}
		next = w[before]
		return nil
	})
	if !errors.Is(next.err, group.ErrGroupStopped) {
		t.Fatalf("wait after the group was deleted follows %v, want %v", next.err, group.ErrGroupStopped)
	}
	if limit := minWait * 5 / 4; next.d > limit {
		t.Errorf("rejoin wait after a run in the group = %s, want at most %s (the minimum, +25 %%)", next.d, limit)
	}
}
