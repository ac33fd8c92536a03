package telemetry

import (
	"context"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// abortableExporter cancels in-flight exports once abort is closed.
//
// Without it a shutdown whose ctx expires while the collector is down
// returns, but the batch span processor keeps retrying the last export in
// the background for up to the exporter's timeout (10s by default), and only
// then closes the gRPC connection: goroutines outlive shutdown. Setup's
// shutdown closes abort after the tracer provider's Shutdown returns, so
// the retry ends at once and the connection closes.
type abortableExporter struct {
	sdktrace.SpanExporter
	abort <-chan struct{} // closed by Setup's shutdown
}

// ExportSpans exports spans with ctx also cancelled by the abort signal.
func (e abortableExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// Owned by this call: exits on abort or when cancel runs below, and is
	// awaited before returning.
	go func() {
		defer close(done)
		select {
		case <-e.abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := e.SpanExporter.ExportSpans(ctx, spans)
	cancel()
	<-done
	if err != nil {
		return fmt.Errorf("export spans: %w", err)
	}
	return nil
}
