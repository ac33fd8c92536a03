package reconcile

import (
	"testing"
	"time"
)

// TestCoolWake: the wake-up is set to the soonest time asked for (a later
// one does not postpone it, a sooner one brings it forward), fires once,
// can be armed again after it fired, and does nothing once stopped
// (shutdown). The hang guards are generous; no wall-clock bound is
// asserted.
func TestCoolWake(t *testing.T) {
	t.Parallel()
	woken := make(chan struct{}, 10)
	c := newCoolWake(func() { woken <- struct{}{} })
	waitWoken := func(when string) {
		t.Helper()
		select {
		case <-woken:
		case <-time.After(time.Minute): // hang guard
			t.Fatalf("%s: not woken", when)
		}
	}
	c.arm(time.Hour)
	c.arm(10 * time.Millisecond) // sooner: brought forward
	c.arm(time.Hour)             // later: ignored
	waitWoken("armed for 10ms after 1h")
	c.arm(time.Millisecond) // again, after it fired
	waitWoken("armed again after firing")
	c.arm(time.Hour)
	c.stop()
	c.arm(time.Millisecond) // stopped: nothing pending, nothing armed
	c.mu.Lock()
	pending := !c.at.IsZero() && c.t.Stop()
	c.mu.Unlock()
	if pending {
		t.Fatal("a wake-up still pending after stop")
	}
	select {
	case <-woken:
		t.Fatal("woken after stop")
	default:
	}
}
