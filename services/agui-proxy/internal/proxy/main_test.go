package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that relays, sweepers and upstream calls leave no
// goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
