package telemetry

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Span attribute keys every service uses for the object a span handles or
// writes, so one tag search (ambient.object_id=<id>) finds a session's
// whole life across services and traces.
const (
	AttrObjectID  = attribute.Key("ambient.object_id")
	AttrProjectID = attribute.Key("ambient.project_id")
	AttrResource  = attribute.Key("ambient.resource")
	AttrEventType = attribute.Key("ambient.event_type")
)

type ctxAttrsKey struct{}

// ContextWithAttributes returns ctx carrying attrs (added to those ctx
// already carries). Every span started under the returned ctx by a tracer
// of [Setup]'s provider gets each of them that it does not set itself: a
// consumer puts the event's object here once, and every span its handler
// starts (its own, the API calls') says which object it was about, without
// each service repeating it.
func ContextWithAttributes(ctx context.Context, attrs ...attribute.KeyValue) context.Context {
	prev, _ := ctx.Value(ctxAttrsKey{}).([]attribute.KeyValue)
	return context.WithValue(ctx, ctxAttrsKey{}, append(slices.Clip(prev), attrs...))
}

// AttributesFromContext returns the attributes ContextWithAttributes put in
// ctx (nil when none).
func AttributesFromContext(ctx context.Context) []attribute.KeyValue {
	attrs, _ := ctx.Value(ctxAttrsKey{}).([]attribute.KeyValue)
	return attrs
}

// WithContextAttributes returns tp with every span started by its tracers
// given the attributes [ContextWithAttributes] put on the start's ctx,
// except those the start sets itself: a client span tagged with the
// object its request names keeps it. Setup's provider is wrapped so; tests
// that build their own provider wrap it with this. Safe for concurrent use
// when tp is.
//
// The attributes are added as start options, not by a span processor: the
// SDK snapshots every span at its end for its processors, and a processor
// that only acts at the start made every span pay for that copy (most of a
// span's cost when nothing is exported, see BenchmarkSpan).
func WithContextAttributes(tp trace.TracerProvider) trace.TracerProvider {
	return contextAttrsProvider{TracerProvider: tp}
}

type contextAttrsProvider struct {
	trace.TracerProvider
}

func (p contextAttrsProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return contextAttrsTracer{Tracer: p.TracerProvider.Tracer(name, opts...)}
}

type contextAttrsTracer struct {
	trace.Tracer
}

// Start puts the ctx attributes before the caller's options: the SDK keeps
// the last value of a key, so the span's own attributes win.
func (t contextAttrsTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if attrs := AttributesFromContext(ctx); len(attrs) > 0 {
		opts = append([]trace.SpanStartOption{trace.WithAttributes(attrs...)}, opts...)
	}
	return t.Tracer.Start(ctx, name, opts...) //nolint:spancheck // the caller ends the span
}
