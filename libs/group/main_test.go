package group_test

import (
	"os"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

func TestMain(m *testing.M) {
	// The events codec uses the global propagator, as telemetry.Setup
	// configures it in the services.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}
