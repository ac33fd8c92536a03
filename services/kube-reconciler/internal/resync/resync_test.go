package resync

import (
	"errors"
	"testing"
	"time"
)

func TestGrace(t *testing.T) {
	t.Parallel()
	tests := []struct{ interval, want time.Duration }{
		{5 * time.Minute, time.Minute},
		{2 * time.Minute, time.Minute},
		{time.Minute, 30 * time.Second},
		{3 * time.Second, 1500 * time.Millisecond},
	}
	for _, tc := range tests {
		if got := Grace(tc.interval); got != tc.want {
			t.Errorf("Grace(%s) = %s, want %s", tc.interval, got, tc.want)
		}
	}
}

// TestNewRefusesMissingParts: the app's wiring is checked at start, not at
// the first pass.
func TestNewRefusesMissingParts(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Interval: time.Minute}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without dependencies = %v, want ErrInvalidConfig", err)
	}
}
