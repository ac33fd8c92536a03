package telemetry

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves the batch span processor or
// the exporter's gRPC connection running after shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
