package group_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// recorder is an SDK tracer provider that keeps every ended span and adds
// the ctx attributes, as telemetry.Setup's provider does.
func recorder(t *testing.T) (trace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() {
		if err := sdk.Shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("tracer provider shutdown: %v", err)
		}
	})
	tp := telemetry.WithContextAttributes(sdk)
	return tp, rec
}

// producerCtx carries a fresh sampled span context, as the informer's
// publish span would: trace id from n, span id n.
func producerCtx(t *testing.T, n byte) context.Context {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xab, n}, SpanID: trace.SpanID{0xcd, n}, TraceFlags: trace.FlagsSampled,
	})
	return trace.ContextWithSpanContext(t.Context(), sc)
}

// attr returns the value of key on s ("" when absent).
func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// spansNamed returns the ended spans called name, in end order.
func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// TestConsumerSpan: every handler call runs in a CONSUMER span whose
// parent is the producer span of the message, tagged with the object, and
// the spans the handler starts are its children and carry the object too.
// A failed try is its own span, with the error.
func TestConsumerSpan(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	tp, rec := recorder(t)
	cfg := testConfig("a")
	cfg.TracerProvider = tp
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		// What a handler's API write looks like: a span started under ctx.
		_, span := tp.Tracer("handler").Start(ctx, "write")
		span.End()
		if m.Attempt == 1 {
			return errors.New("first try fails")
		}
		return nil
	})
	waitMembers(t, js, "a")
	pctx := producerCtx(t, 1)
	publishCtx(t, pctx, js, "s1", 1)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != 1 {
			return fmt.Errorf("%d acked", n)
		}
		return nil
	})

	producer := trace.SpanContextFromContext(pctx)
	consumers := spansNamed(rec, "process sessions")
	if len(consumers) != 2 {
		t.Fatalf("%d consumer spans, want 2 (a failed try and a good one)", len(consumers))
	}
	for i, s := range consumers {
		if s.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("try %d: kind %v, want CONSUMER", i+1, s.SpanKind())
		}
		if s.Parent().SpanID() != producer.SpanID() || s.SpanContext().TraceID() != producer.TraceID() {
			t.Errorf("try %d: parent %s/%s, want the producer %s/%s", i+1, s.SpanContext().TraceID(), s.Parent().SpanID(), producer.TraceID(), producer.SpanID())
		}
		want := map[attribute.Key]string{
			telemetry.AttrObjectID: "s1", telemetry.AttrProjectID: "p1", telemetry.AttrResource: "sessions",
			"messaging.system": "nats", "messaging.consumer.group.name": testGroup, group.AttrAttempt: fmt.Sprint(i + 1),
			"messaging.operation.type": "process",
		}
		for k, v := range want {
			if got := attr(s, k); got != v {
				t.Errorf("try %d: %s = %q, want %q", i+1, k, got, v)
			}
		}
	}
	if c := consumers[0].Status().Code; c != codes.Error {
		t.Errorf("failed try's status = %v, want Error", c)
	}
	if c := consumers[1].Status().Code; c == codes.Error {
		t.Errorf("good try's status = %v", c)
	}
	writes := spansNamed(rec, "write")
	if len(writes) != 2 {
		t.Fatalf("%d handler spans, want 2", len(writes))
	}
	for i, w := range writes {
		if w.Parent().SpanID() != consumers[i].SpanContext().SpanID() {
			t.Errorf("handler span %d is not a child of its consumer span", i+1)
		}
		if attr(w, telemetry.AttrObjectID) != "s1" || attr(w, telemetry.AttrProjectID) != "p1" {
			t.Errorf("handler span %d attributes %v lack the object", i+1, w.Attributes())
		}
	}
}

// TestCoalescedCallLinksEveryProducer: one call standing for several
// queued events is the child of the newest event's producer and links the
// producer of each older one, so every publish that led to it can be
// followed.
func TestCoalescedCallLinksEveryProducer(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	tp, rec := recorder(t)
	started := make(chan struct{}, 1) // v1's call started
	release := make(chan struct{})
	cfg := testConfig("a")
	cfg.Coalesce = true
	cfg.TracerProvider = tp
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		if version(m) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	waitMembers(t, js, "a")
	publishCtx(t, producerCtx(t, 1), js, "x", 1)
	waitSignal(t, started, "first call never started")
	const last = 5
	for v := 2; v <= last; v++ {
		publishCtx(t, producerCtx(t, byte(v)), js, "x", v)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().InFlight; n != last {
			return fmt.Errorf("%d held, want %d", n, last)
		}
		return nil
	})
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != last {
			return fmt.Errorf("%d of %d acked", n, last)
		}
		return nil
	})

	spans := spansNamed(rec, "process sessions")
	if len(spans) != 2 {
		t.Fatalf("%d consumer spans, want 2 (v1, then v2..v%d in one call)", len(spans), last)
	}
	s := spans[1]
	if want := trace.SpanContextFromContext(producerCtx(t, last)); s.Parent().SpanID() != want.SpanID() {
		t.Errorf("coalesced call's parent = %s, want v%d's producer %s", s.Parent().SpanID(), last, want.SpanID())
	}
	var linked []trace.SpanID
	for _, l := range s.Links() {
		linked = append(linked, l.SpanContext.SpanID())
	}
	var want []trace.SpanID
	for v := 2; v < last; v++ {
		want = append(want, trace.SpanContextFromContext(producerCtx(t, byte(v))).SpanID())
	}
	if !slices.Equal(linked, want) {
		t.Errorf("links = %v, want the producers of v2..v%d %v", linked, last-1, want)
	}
	if got := attr(s, group.AttrCoalesced); got != fmt.Sprint(last-2) {
		t.Errorf("%s = %q, want %d", group.AttrCoalesced, got, last-2)
	}
}

// TestDeadLetterSpan: a message that goes to the DLQ gets a dead-letter
// span under its producer's, with the reason and the handler's error, and
// Config.OnDeadLetter's report (the service's API write) is a child of it
// carrying the object, not a sibling of the failed try.
func TestDeadLetterSpan(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	tp, rec := recorder(t)
	cfg := testConfig("a")
	cfg.TracerProvider = tp
	reported := make(chan struct{}, 1)
	cfg.OnDeadLetter = func(ctx context.Context, _ group.Message, _ string, _ error) {
		_, span := tp.Tracer("service").Start(ctx, "report")
		span.End()
		reported <- struct{}{}
	}
	startMember(t, srv, cfg, func(context.Context, group.Message) error {
		return group.Terminal(errors.New("invalid name"))
	})
	waitMembers(t, js, "a")
	pctx := producerCtx(t, 3)
	publishCtx(t, pctx, js, "s1", 1)
	select {
	case <-reported:
	case <-time.After(15 * time.Second):
		t.Fatal("OnDeadLetter not called within 15s")
	}
	var dead []sdktrace.ReadOnlySpan
	testenv.Eventually(t, 5*time.Second, func() error {
		if dead = spansNamed(rec, "dead-letter sessions"); len(dead) != 1 {
			return fmt.Errorf("%d dead-letter spans, want 1", len(dead))
		}
		return nil
	})
	producer := trace.SpanContextFromContext(pctx)
	d := dead[0]
	if d.Parent().SpanID() != producer.SpanID() || d.SpanContext().TraceID() != producer.TraceID() {
		t.Errorf("dead-letter span's parent %s, want the producer %s", d.Parent().SpanID(), producer.SpanID())
	}
	if d.Status().Code != codes.Error || !strings.Contains(d.Status().Description, "invalid name") {
		t.Errorf("dead-letter span status %v %q, want Error with the handler's error", d.Status().Code, d.Status().Description)
	}
	if got := attr(d, group.AttrDeadLetterReason); got != group.ReasonTerminal {
		t.Errorf("reason %q, want %q", got, group.ReasonTerminal)
	}
	reports := spansNamed(rec, "report")
	if len(reports) != 1 {
		t.Fatalf("%d report spans, want 1", len(reports))
	}
	if reports[0].Parent().SpanID() != d.SpanContext().SpanID() {
		t.Errorf("report's parent %s, want the dead-letter span %s", reports[0].Parent().SpanID(), d.SpanContext().SpanID())
	}
	if attr(reports[0], telemetry.AttrObjectID) != "s1" {
		t.Errorf("report attributes %v lack the object", reports[0].Attributes())
	}
}
