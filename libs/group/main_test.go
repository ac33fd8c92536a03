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
		// nats-server's own too: a stream store created on a server
		// while it shuts down (seen once in several -count=2 runs, with
		// the cluster and restart tests in the package) keeps its state
		// flusher and the access-time ticker it registered.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
	)
}
