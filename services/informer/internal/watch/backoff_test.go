package watch

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// TestBackoffSequence pins the reconnect schedule: 1s doubling to 30s,
// back to 1s after Reset. Jitter is off here; TestBackoffJitterBounds
// checks it.
func TestBackoffSequence(t *testing.T) {
	t.Parallel()
	b := newBackoff(Config{}.withDefaults())
	b.RandomizationFactor = 0
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := b.NextBackOff(); got != w {
			t.Fatalf("attempt %d: got %v, want %v", i, got, w)
		}
	}
	b.Reset()
	if got := b.NextBackOff(); got != time.Second {
		t.Fatalf("after Reset: got %v, want 1s", got)
	}
}

// TestBackoffJitterBounds: with the default 25 % jitter every delay stays
// within +/-25 % of the schedule, and the jitter is really applied.
func TestBackoffJitterBounds(t *testing.T) {
	t.Parallel()
	schedule := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	b := newBackoff(Config{}.withDefaults())
	varied := false
	for range 1000 {
		b.Reset()
		for i, base := range schedule {
			d := b.NextBackOff()
			low, high := base*3/4, base*5/4+1
			if d < low || d > high {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", i, d, low, high)
			}
			varied = varied || d != base
		}
	}
	if !varied {
		t.Fatal("no delay differed from the schedule: jitter not applied")
	}
}

// TestBackoffNeverExceedsMax: WATCH_BACKOFF_MAX is the longest delay
// between watch retries (docs/configuration.md), jitter included; at the
// cap the delays are still spread, not all equal to it. Before, the jitter
// was applied after the cap: up to 37.5 s of a 30 s maximum.
func TestBackoffNeverExceedsMax(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{}, {BackoffInitial: 25 * time.Second, BackoffMax: 30 * time.Second}} {
		cfg = cfg.withDefaults()
		b := newBackoff(cfg)
		atCap := map[time.Duration]bool{}
		for range 1000 {
			b.Reset()
			for i := range 8 {
				d := b.NextBackOff()
				if d > cfg.BackoffMax {
					t.Fatalf("initial %s, max %s: attempt %d waits %s, longer than the max", cfg.BackoffInitial, cfg.BackoffMax, i, d)
				}
				if i == 7 {
					if low := cfg.BackoffMax * 3 / 4; d < low {
						t.Fatalf("initial %s, max %s: attempt %d waits %s, below %s", cfg.BackoffInitial, cfg.BackoffMax, i, d, low)
					}
					atCap[d] = true
				}
			}
		}
		if len(atCap) < 100 {
			t.Fatalf("initial %s, max %s: only %d distinct delays at the cap: jitter lost", cfg.BackoffInitial, cfg.BackoffMax, len(atCap))
		}
	}
}

// TestRunResetsBackoffAfterHealthyStream: failures back off 1, 2, 4 x the
// initial delay; a stream that then delivers events was healthy, so the
// next failure starts over at the initial delay instead of going on to 8
// (the original never reset its attempt counter, so one flaky hour left
// every later reconnect waiting the maximum).
func TestRunResetsBackoffAfterHealthyStream(t *testing.T) {
	t.Parallel()
	const unit = time.Millisecond
	var mu sync.Mutex
	opened := 0 // guarded by mu; Watch calls
	errDown := errors.New("api down")
	src := Source[*ambientv1.Session]{
		Pages: Whole(func(context.Context) ([]*ambientv1.Session, error) { return nil, nil }),
		Watch: func(ctx context.Context) (Stream[*ambientv1.Session], error) {
			mu.Lock()
			defer mu.Unlock()
			opened++
			if opened != 4 {
				return nil, errDown
			}
			// The fourth stream is healthy: one event, then a clean end.
			ch := make(chan Event[*ambientv1.Session], 1)
			ch <- Event[*ambientv1.Session]{Type: ambientv1.EventType_EVENT_TYPE_CREATED, ID: "a", Object: sess("a", 1)}
			close(ch)
			return chanStream{done: ctx.Done(), ch: ch}, nil
		},
	}
	// 3 failures, the healthy stream's end, 1 failure.
	requireWaits(t, reconnectWaits(t, src, unit, 5), unit, 1, 2, 4, 1, 2)
}

// reconnectWaits runs a Watcher on src (backoff from unit, no cap) until
// it has reconnected n times, and returns the waits it chose.
func reconnectWaits(t *testing.T, src Source[*ambientv1.Session], unit time.Duration, n int) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var waits []time.Duration // guarded by mu
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	hooks := Hooks{Reconnect: func(_ error, wait time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		waits = append(waits, wait)
		if len(waits) == n {
			cancel()
		}
	}}
	w := New(src, diff.NewStore[*ambientv1.Session](), func(string) {}, Config{BackoffInitial: unit, BackoffMax: time.Hour}, hooks, slog.New(slog.DiscardHandler))
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(waits)
}

// requireWaits checks waits against multiples of unit, within the
// default +/-25 % jitter.
func requireWaits(t *testing.T, waits []time.Duration, unit time.Duration, multiples ...int) {
	t.Helper()
	want := make([]time.Duration, len(multiples))
	for i, m := range multiples {
		want[i] = time.Duration(m) * unit
	}
	for i, base := range want {
		if i >= len(waits) || waits[i] < base*3/4 || waits[i] > base*5/4+1 {
			t.Fatalf("waits %v, want about %v (+/-25 %%)", waits, want)
		}
	}
}

// deliveredStream is a chanStream that says when its consumer has taken
// an event.
type deliveredStream struct {
	chanStream
	delivered chan<- struct{}
}

func (s deliveredStream) Recv() (Event[*ambientv1.Session], error) {
	ev, err := s.chanStream.Recv()
	if err == nil {
		s.delivered <- struct{}{}
	}
	return ev, err
}

// TestRunBacksOffWhenListsKeepFailing: on a busy API every stream delivers
// events, but if each cycle's list then fails, no cycle ever synced, and
// the reconnects back off 1, 2, 4, ... x the initial delay instead of
// relisting everything at the initial delay forever.
func TestRunBacksOffWhenListsKeepFailing(t *testing.T) {
	t.Parallel()
	const unit = time.Millisecond
	delivered := make(chan struct{}, 1)
	src := Source[*ambientv1.Session]{
		Pages: func(ctx context.Context, _ func([]*ambientv1.Session, int) error) error {
			// The list fails only once the stream has delivered.
			select {
			case <-delivered:
			case <-ctx.Done():
				return ctx.Err()
			}
			return errors.New("list page 37: internal error")
		},
		Watch: func(ctx context.Context) (Stream[*ambientv1.Session], error) {
			ch := make(chan Event[*ambientv1.Session], 1)
			ch <- Event[*ambientv1.Session]{Type: ambientv1.EventType_EVENT_TYPE_UPDATED, ID: "a", Object: sess("a", 1)}
			return deliveredStream{chanStream: chanStream{done: ctx.Done(), ch: ch}, delivered: delivered}, nil
		},
	}
	// Cycles that never synced: no reset.
	requireWaits(t, reconnectWaits(t, src, unit, 5), unit, 1, 2, 4, 8, 16)
}
