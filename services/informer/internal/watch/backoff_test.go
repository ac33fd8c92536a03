package watch

import (
	"testing"
	"time"
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
