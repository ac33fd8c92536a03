package group_test

import (
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestMain(m *testing.M) {
	// The events codec uses the global propagator, as telemetry.Setup
	// configures it in the services.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	// Run owns every goroutine it starts (and pcgroups' once stopped).
	goleak.VerifyTestMain(m, testenv.NATSServerLeaks()...)
}
