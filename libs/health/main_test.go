package health

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a server, check or connection goroutine
// outlives its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
