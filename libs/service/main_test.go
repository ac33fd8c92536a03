package service_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestMain fails the package when a part, server or NATS goroutine
// outlives Run. Main's tests run a child copy of this binary (see
// helperMain), which never returns here.
func TestMain(m *testing.M) {
	helperMain()
	goleak.VerifyTestMain(m, testenv.NATSServerLeaks()...)
}
