package group

import (
	"context"
	"strconv"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/telemetry"
)

// TracerName is the instrumentation scope of the consumer spans.
const TracerName = "github.com/ambient-code/control-plane/libs/group"

// Attributes of the consumer span besides the messaging semantic
// conventions' and telemetry's ambient.* ones.
const (
	// AttrAttempt is Message.Attempt (the name kube-reconciler's spans used
	// before the consumer span moved here).
	AttrAttempt = attribute.Key("messaging.nats.attempt")
	// AttrCoalesced is Message.Coalesced, set when it is not 0.
	AttrCoalesced = attribute.Key("ambient.coalesced")
	// AttrDeadLetterReason is the DLQ reason (ReasonExhausted, ...) on the
	// dead-letter span.
	AttrDeadLetterReason = attribute.Key("ambient.dead_letter.reason")
)

// newTracer returns the consumer spans' tracer: cfg.TracerProvider's, or
// the OTel global one (which telemetry.Setup installs) when it is nil.
func newTracer(cfg Config) trace.Tracer {
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(TracerName)
}

// producers collects the producer span contexts of a batch's messages:
// the newest is the consumer span's parent, each older one (coalesced into
// the same call) becomes a link, so every publish that led to the call can
// be followed.
type producers []trace.SpanContext

// links returns the valid span contexts of all but the newest message.
func (p producers) links() []trace.Link {
	if len(p) < 2 {
		return nil
	}
	out := make([]trace.Link, 0, len(p)-1)
	for _, sc := range p[:len(p)-1] {
		if sc.IsValid() {
			out = append(out, trace.Link{SpanContext: sc})
		}
	}
	return out
}

// objectAttributes are the ambient.* attributes of ev's object, put on the
// consumer span and, through telemetry.ContextWithAttributes, on every span
// the handler starts.
func objectAttributes(ev *eventsv1.ResourceEvent) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		telemetry.AttrResource.String(events.ResourceToken(ev.GetResource())),
		telemetry.AttrObjectID.String(ev.GetObjectId()),
	}
	if p := ev.GetProjectId(); p != "" {
		attrs = append(attrs, telemetry.AttrProjectID.String(p))
	}
	return attrs
}

// messageAttributes are the attributes the consumer and dead-letter spans
// share: the message's (messaging semantic conventions, attempt,
// coalesced count) and the object's (obj, objectAttributes).
func (w *worker) messageAttributes(m Message, partition int, obj []attribute.KeyValue) []attribute.KeyValue {
	attrs := append([]attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", m.Subject),
		attribute.String("messaging.consumer.group.name", w.cfg.Group),
		attribute.String("messaging.destination.partition.id", strconv.Itoa(partition)),
		attribute.String("messaging.message.id", m.Event.GetEventId()),
		telemetry.AttrEventType.String(events.TypeName(m.Event.GetType())),
		AttrAttempt.Int64(int64(min(m.Attempt, 1<<62))),
	}, obj...)
	if m.Coalesced > 0 {
		attrs = append(attrs, AttrCoalesced.Int(m.Coalesced))
	}
	return attrs
}

// startConsumerSpan starts the CONSUMER span of one handler call, a child
// of the newest message's producer span (in hctx), linked to the older
// coalesced ones, and returns the handler's ctx carrying the object's
// attributes for every span started under it.
func (w *worker) startConsumerSpan(hctx context.Context, m Message, partition int, links []trace.Link) (context.Context, trace.Span) {
	ev := m.Event
	obj := objectAttributes(ev)
	attrs := append(w.messageAttributes(m, partition, obj),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.operation.name", "process"))
	if m.Coalesced > 0 {
		attrs = append(attrs, attribute.Int("messaging.batch.message_count", m.Coalesced+1))
	}
	// The caller ends the span (endConsumerSpan) when the handler returns.
	ctx, span := w.tracer.Start(hctx, "process "+events.ResourceToken(ev.GetResource()), //nolint:spancheck // ended by the caller
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...), trace.WithAttributes(attrs...))
	return telemetry.ContextWithAttributes(ctx, obj...), span //nolint:spancheck // ended by the caller
}

// startDeadLetterSpan starts the span in which a batch's messages go to the
// DLQ and Config.OnDeadLetter reports it: a child of the newest message's
// producer span, linked to the older ones, as the consumer spans are. The
// service's report (a session condition written to the API) is then a
// child of a span saying why, not a sibling of the failed tries hanging
// from the producer. The caller ends it with endConsumerSpan(span, cause).
func (w *worker) startDeadLetterSpan(hctx context.Context, m Message, partition int, links []trace.Link, reason string) (context.Context, trace.Span) {
	obj := objectAttributes(m.Event)
	attrs := append(w.messageAttributes(m, partition, obj), AttrDeadLetterReason.String(reason))
	ctx, span := w.tracer.Start(hctx, "dead-letter "+events.ResourceToken(m.Event.GetResource()), //nolint:spancheck // ended by the caller
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithLinks(links...), trace.WithAttributes(attrs...))
	return telemetry.ContextWithAttributes(ctx, obj...), span //nolint:spancheck // ended by the caller
}

// endConsumerSpan records the handler's error, if any, and ends span.
func endConsumerSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
