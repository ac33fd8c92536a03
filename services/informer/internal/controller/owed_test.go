package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestOwedFloor: the floor to persist is the lowest known sequence owed
// since nothing was owed; it goes down at once, stays while anything is
// owed (no scan per remove), is gone once nothing is, and a held floor of
// an earlier term stays whatever is owed.
func TestOwedFloor(t *testing.T) {
	t.Parallel()
	type step struct {
		add, remove string
		seq         uint64
		hold        uint64
		want        uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "lowest goes down at once", steps: []step{
			{add: "a", seq: 20, want: 20}, {add: "b", seq: 10, want: 10}, {add: "c", seq: 30, want: 10},
		}},
		{name: "stays until nothing is owed", steps: []step{
			{add: "a", seq: 10, want: 10}, {add: "b", seq: 20, want: 10},
			{remove: "a", want: 10}, {remove: "b", want: 0},
		}},
		{name: "an id owed again keeps its lower sequence", steps: []step{
			{add: "a", seq: 10, want: 10}, {add: "a", seq: 40, want: 10}, {add: "a", seq: 0, want: 10}, {remove: "a", want: 0},
		}},
		{name: "unknown sequences are no floor", steps: []step{
			{add: "a", seq: 0, want: 0}, {add: "b", seq: 15, want: 15}, {remove: "b", want: 15}, {remove: "a", want: 0},
		}},
		{name: "a held floor stays", steps: []step{
			{hold: 5, want: 5}, {add: "a", seq: 10, want: 5}, {add: "b", seq: 3, want: 3}, {remove: "a", want: 3}, {remove: "b", want: 5},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newOwedWrites()
			for i, s := range tc.steps {
				switch {
				case s.add != "":
					o.add(s.add, s.seq)
				case s.remove != "":
					o.remove(s.remove)
				default:
					o.hold(s.hold)
				}
				if got := o.lowest(); got != s.want {
					t.Fatalf("step %d: floor %d, want %d", i, got, s.want)
				}
			}
		})
	}
}

// TestOwedFloorWriteBacksOff: a KV that refuses every floor write (down,
// or full) used to be asked again every 100 ms for ever, with a warning
// each time. The retries back off (100 ms doubling to 5 s), and a write
// that lands resets the backoff.
func TestOwedFloorWriteBacksOff(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var attempts []time.Time // guarded by mu
	failing := true          // guarded by mu
	write := func(_ context.Context, want uint64) (uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		if failing {
			return 0, errors.New("kv refuses")
		}
		return want, nil
	}
	gaps := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		var out []time.Duration
		for i := 1; i < len(attempts); i++ {
			out = append(out, attempts[i].Sub(attempts[i-1]))
		}
		return out
	}
	waitAttempts := func(n int) {
		testenv.Eventually(t, 20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(attempts) < n {
				return fmt.Errorf("%d floor writes, want %d", len(attempts), n)
			}
			return nil
		})
	}
	owed := newOwedWrites()
	owed.add("a", 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepFloor(ctx, owed, 0, write, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()

	// Nominal gaps 100, 200, 400, 800 ms, each +/-25 %.
	waitAttempts(5)
	if g := gaps(); g[3] < 500*time.Millisecond {
		t.Fatalf("gaps between failed floor writes %v: the fourth is under 500 ms, want a backoff", g)
	}

	// A write that lands resets the backoff: the next failure is retried
	// after about 100 ms again.
	mu.Lock()
	failing = false
	mu.Unlock()
	waitAttempts(6)
	mu.Lock()
	failing = true
	mu.Unlock()
	owed.add("b", 5) // a lower floor: written at once
	waitAttempts(8)
	// Reset, the retry comes after about 100 ms; not reset, after the
	// backoff's next step, 3.2 s -25 %: never before 2.4 s. A bound below
	// that tells the two apart however loaded the machine is (load only
	// delays a timer), where one at 400 ms failed on a slow run.
	if g := gaps(); g[6] >= 2*time.Second {
		t.Errorf("gaps between floor writes %v: the retry after a landed write took %v, want the backoff reset to about 100 ms", g, g[6])
	}
}
