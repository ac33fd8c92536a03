package group_test

import (
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The events codec uses the global propagator, as telemetry.Setup
	// configures it in the services.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	// Run owns every goroutine it starts (and pcgroups' once stopped).
	goleak.VerifyTestMain(m,
		// nats-server's own: a sourced stream (the group's work queue)
		// waits up to 30 s for its source consumer with no quit channel,
		// so one set up just before a server shut down (cluster leader
		// changes, restarts in the outage tests) outlives the server.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"),
	)
}
