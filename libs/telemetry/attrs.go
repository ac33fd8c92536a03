package telemetry

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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

// ContextAttributes is the span processor behind [ContextWithAttributes];
// Setup installs it. Tests that build their own tracer provider add it with
// sdktrace.WithSpanProcessor. It is safe for concurrent use.
type ContextAttributes struct{}

var _ sdktrace.SpanProcessor = ContextAttributes{}

// OnStart adds the ctx attributes the span does not have yet: an attribute
// set when the span was started wins (a client span tagged with the object
// its request names keeps it).
func (ContextAttributes) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) {
	attrs := AttributesFromContext(ctx)
	if len(attrs) == 0 {
		return
	}
	have := s.Attributes()
	add := make([]attribute.KeyValue, 0, len(attrs))
	for _, a := range attrs {
		if !slices.ContainsFunc(have, func(h attribute.KeyValue) bool { return h.Key == a.Key }) {
			add = append(add, a)
		}
	}
	s.SetAttributes(add...)
}

// OnEnd does nothing.
func (ContextAttributes) OnEnd(sdktrace.ReadOnlySpan) {}

// Shutdown does nothing.
func (ContextAttributes) Shutdown(context.Context) error { return nil }

// ForceFlush does nothing.
func (ContextAttributes) ForceFlush(context.Context) error { return nil }
