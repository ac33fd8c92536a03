package testenv

import "go.uber.org/goleak"

// NATSServerLeaks are the goleak options for goroutines an embedded
// nats-server leaves behind after Shutdown returns. They are the server's
// own, not ours, and have no quit channel, so no test can wait them out:
//
//   - a sourced stream (libs/group's work queue is one) waits up to 30 s
//     for its source consumer (stream.go, trySetupSourceConsumer), so one
//     set up just before the server shut down outlives it;
//   - a stream store created while the server shuts down keeps its state
//     flusher and the access-time ticker it registered.
//
// Every package that starts an embedded server and checks for leaks passes
// these, so a test that happens to shut a server down at that moment does
// not fail a run (it did fail CI once, in libs/service).
func NATSServerLeaks() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
	}
}
