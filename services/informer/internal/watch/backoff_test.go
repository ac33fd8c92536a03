package watch

import (
	"testing"
	"time"
)

func TestBackoffSequence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rand float64
		want []time.Duration
	}{
		{name: "no jitter (middle)", rand: 0.5, want: []time.Duration{
			time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}},
		{name: "low edge -25%", rand: 0, want: []time.Duration{
			750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 6 * time.Second, 12 * time.Second, 22500 * time.Millisecond, 22500 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := Backoff{Initial: time.Second, Max: 30 * time.Second, Jitter: 0.25, rand: func() float64 { return tc.rand }}
			for i, w := range tc.want {
				if got := b.Next(); got != w {
					t.Fatalf("attempt %d: got %v, want %v", i, got, w)
				}
			}
			b.Reset()
			if got, want := b.Next(), tc.want[0]; got != want {
				t.Fatalf("after Reset: got %v, want %v", got, want)
			}
		})
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: time.Second, Max: 30 * time.Second, Jitter: 0.25}
	for range 1000 {
		b.Reset()
		for range 8 {
			d := b.Next()
			if d < 750*time.Millisecond || d > 37500*time.Millisecond {
				t.Fatalf("delay %v outside [0.75s, 37.5s]", d)
			}
		}
	}
}
