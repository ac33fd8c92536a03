package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkSpan is the cost of one span as the services record them when
// nothing is exported (the default): started under a ctx tagged with its
// object (ContextWithAttributes), with the attributes a publish sets, then
// ended. Every event a service handles pays this at least once. The
// attributes given at the start (trace.WithAttributes) cost one more copy
// than the same set on the started span: the start options hold their own.
//
//	go test -run '^$' -bench Span -benchmem ./
func BenchmarkSpan(b *testing.B) {
	tp, shutdown, err := newTracerProvider(b.Context(), resource.Empty(), false, fileHeaders{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := shutdown(context.WithoutCancel(b.Context())); err != nil {
			b.Error(err)
		}
	})
	tr := tp.Tracer("bench")
	ctx := ContextWithAttributes(b.Context(), AttrObjectID.String("s1"), AttrProjectID.String("p1"))
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", "ambient.sessions.p1.s1"),
		attribute.String("messaging.message.id", "s1-42"),
		AttrResource.String("sessions"),
		AttrEventType.String("MODIFIED"),
	}
	b.Run("attributes=at-start", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, span := tr.Start(ctx, "publish sessions MODIFIED", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
			span.SetAttributes(attribute.Int64("messaging.nats.seq", 42), attribute.Bool("messaging.nats.duplicate", false))
			span.End()
		}
	})
	b.Run("attributes=set-after", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, span := tr.Start(ctx, "publish sessions MODIFIED", trace.WithSpanKind(trace.SpanKindProducer))
			span.SetAttributes(attrs...)
			span.SetAttributes(attribute.Int64("messaging.nats.seq", 42), attribute.Bool("messaging.nats.duplicate", false))
			span.End()
		}
	})
}
