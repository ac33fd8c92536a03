package telemetry

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestContextAttributes: spans started under a ctx tagged with an object
// carry it, children of children too; an attribute the span sets itself
// wins; a later ContextWithAttributes overrides an earlier one.
func TestContextAttributes(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() {
		if err := sdk.Shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Error(err)
		}
	})
	tp := WithContextAttributes(sdk)
	tr := tp.Tracer("test")
	ctx := ContextWithAttributes(t.Context(), AttrObjectID.String("s1"), AttrProjectID.String("p1"))
	ctx, parent := tr.Start(ctx, "handler")
	_, own := tr.Start(ctx, "own", trace.WithAttributes(AttrObjectID.String("other")))
	own.End()
	_, over := tr.Start(ContextWithAttributes(ctx, AttrProjectID.String("p2")), "override")
	over.End()
	parent.End()
	_, plain := tr.Start(t.Context(), "plain")
	plain.End()

	got := map[string]map[attribute.Key]string{}
	for _, s := range rec.Ended() {
		m := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			m[kv.Key] = kv.Value.String()
		}
		got[s.Name()] = m
	}
	want := map[string]map[attribute.Key]string{
		"handler":  {AttrObjectID: "s1", AttrProjectID: "p1"},
		"own":      {AttrObjectID: "other", AttrProjectID: "p1"},
		"override": {AttrObjectID: "s1", AttrProjectID: "p2"},
		"plain":    {},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("span attributes (-want +got):\n%s", diff)
	}
}
