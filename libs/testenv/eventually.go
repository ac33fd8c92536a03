package testenv

import (
	"testing"
	"time"
)

// pollInterval is short because the conditions polled here (a message
// consumed, a key written) settle within milliseconds on a local server.
const pollInterval = 10 * time.Millisecond

// Eventually calls fn until it returns nil or timeout passes, then fails the
// test with fn's last error. fn runs on the test goroutine, never
// concurrently with itself.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Poll(timeout, fn); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// Poll calls fn until it returns nil or timeout passes and returns fn's last
// error (nil on success). Use it where failing the test is the caller's job,
// e.g. outside the test goroutine.
func Poll(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		<-ticker.C
	}
}
