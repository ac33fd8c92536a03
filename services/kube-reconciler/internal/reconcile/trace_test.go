package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
)

// TestTraceContinuesFromHeaders: the reconcile span is a child of the span
// whose context travelled in the event's traceparent header.
func TestTraceContinuesFromHeaders(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	r, _ := newReconciler(t, kv(t))
	r.tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")

	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled, Remote: true})
	header := nats.Header{}
	propagation.TraceContext{}.Inject(trace.ContextWithRemoteSpanContext(context.Background(), parent), propagation.HeaderCarrier(header))
	// The group hands the handler a ctx extracted from the headers, as
	// events.Decode does.
	ctx := propagation.TraceContext{}.Extract(t.Context(), propagation.HeaderCarrier(header))

	s := sessionAt("trace-1", "p", time.Now())
	s.ProjectId = proto.String("")
	ev := events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now())
	if err := r.Handle(ctx, group.Message{Event: ev, Header: header, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	if got := spans[0].Parent(); got.TraceID() != parent.TraceID() || got.SpanID() != parent.SpanID() {
		t.Errorf("parent = %v/%v, want %v/%v", got.TraceID(), got.SpanID(), parent.TraceID(), parent.SpanID())
	}
}
