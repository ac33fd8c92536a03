package apitrace_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func TestMain(m *testing.M) {
	// otelgrpc and otelhttp carry trace context through the global
	// propagator, as telemetry.Setup configures it in the services.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	goleak.VerifyTestMain(m)
}

// recorder is an SDK tracer provider keeping every ended span, with the
// ctx attributes processor telemetry.Setup installs.
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

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	out := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value.String()
	}
	return out
}

// TestCallsAreSpansOfTheCallersTrace: every unary API call is a CLIENT
// span under the caller's span and a SERVER span under the client span
// (the traceparent crossed the wire), both naming the object the call is
// about; a watch stream makes no span and tags nothing.
func TestCallsAreSpansOfTheCallersTrace(t *testing.T) {
	t.Parallel()
	tp, rec := recorder(t)
	srv := testenv.API(t, memapi.WithTracerProvider(tp))
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) { cfg.TracerProvider = tp })
	rc, err := apiclient.NewREST(apiclient.RESTConfig{URL: srv.RESTURL(), Token: srv.Token(), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}

	ctx, root := tp.Tracer("test").Start(t.Context(), "handler")
	s, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "n", ProjectId: proto.String("p1")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	if _, err := c.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Pending")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListSessions(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	if _, err := c.WatchSessions(wctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.StopSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	stopWatch()
	root.End()

	rootSC := root.SpanContext()
	type want struct {
		kind           trace.SpanKind
		object, projID string
	}
	wants := map[string][]want{
		"ambient.v1.SessionService/CreateSession": {{trace.SpanKindClient, id, "p1"}, {trace.SpanKindServer, id, "p1"}},
		// The answer names the project the request did not.
		"ambient.v1.SessionService/UpdateSessionStatus": {{trace.SpanKindClient, id, "p1"}, {trace.SpanKindServer, id, "p1"}},
		"ambient.v1.SessionService/ListSessions":        {{trace.SpanKindClient, "", ""}, {trace.SpanKindServer, "", ""}},
	}
	// Server spans end after the client got its answer: wait for all.
	testenv.Eventually(t, 5*time.Second, func() error {
		n := 0
		for _, sp := range rec.Ended() {
			if _, ok := wants[sp.Name()]; ok {
				n++
			}
		}
		if n < 6 {
			return context.DeadlineExceeded
		}
		return nil
	})
	spans := rec.Ended()
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, sp := range spans {
		byID[sp.SpanContext().SpanID()] = sp
	}
	seen := map[string]int{}
	for _, sp := range spans {
		if sp.Name() == "handler" {
			if a := attrs(sp); a[telemetry.AttrObjectID] != "" {
				t.Errorf("the caller's span was tagged %v (by the watch?)", a)
			}
			continue
		}
		if sp.SpanContext().TraceID() != rootSC.TraceID() {
			t.Errorf("span %s is in trace %s, want the caller's %s", sp.Name(), sp.SpanContext().TraceID(), rootSC.TraceID())
		}
		ws, ok := wants[sp.Name()]
		if !ok {
			if sp.SpanKind() == trace.SpanKindClient && sp.Parent().SpanID() == rootSC.SpanID() && attrs(sp)[telemetry.AttrObjectID] == id {
				seen["rest stop client"]++ // otelhttp's span of StopSession
			}
			if sp.SpanKind() == trace.SpanKindServer && attrs(sp)[telemetry.AttrObjectID] == id {
				seen["rest stop server"]++
			}
			continue
		}
		seen[sp.Name()]++
		a := attrs(sp)
		for _, w := range ws {
			if w.kind != sp.SpanKind() {
				continue
			}
			if a[telemetry.AttrObjectID] != w.object || a[telemetry.AttrProjectID] != w.projID {
				t.Errorf("%s %v: object %q project %q, want %q %q", sp.Name(), sp.SpanKind(), a[telemetry.AttrObjectID], a[telemetry.AttrProjectID], w.object, w.projID)
			}
			switch w.kind {
			case trace.SpanKindClient:
				if sp.Parent().SpanID() != rootSC.SpanID() {
					t.Errorf("%s client span's parent is not the caller's span", sp.Name())
				}
			case trace.SpanKindServer:
				if p, ok := byID[sp.Parent().SpanID()]; !ok || p.Name() != sp.Name() || p.SpanKind() != trace.SpanKindClient || !sp.Parent().IsRemote() {
					t.Errorf("%s server span's parent is not its remote client span", sp.Name())
				}
			}
		}
	}
	for name := range wants {
		if seen[name] != 2 {
			t.Errorf("%s: %d spans, want a client and a server span", name, seen[name])
		}
	}
	if seen["rest stop client"] != 1 || seen["rest stop server"] != 1 {
		t.Errorf("REST stop: %d client and %d server spans naming %s, want 1 and 1", seen["rest stop client"], seen["rest stop server"], id)
	}
	for _, sp := range spans {
		if sp.Name() == "ambient.v1.SessionService/WatchSessions" {
			t.Errorf("a watch stream made a span (%v)", sp.SpanKind())
		}
	}
}
