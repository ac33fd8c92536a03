package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/telemetry"
)

// attrOf is the value of the span's attribute key ("" when absent).
func attrOf(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestTracePropagates: the proxy continues the client's trace (W3C
// traceparent) with a server span and passes it on to the runner; the
// server span and the runner request's client span name the session
// (ambient.object_id).
func TestTracePropagates(t *testing.T) {
	// Not parallel: it sets the process-wide propagator, as telemetry.Setup does.
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })

	got := make(chan string, 1) // the runner's traceparent
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	spans := tracetest.NewSpanRecorder()
	tp := telemetry.WithContextAttributes(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	_, srv := startProxy(t, Config{TracerProvider: tp}, tab, nil)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/sessions/s1/health", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tp2 := within(t, 5*time.Second, got, "runner request")
	if !strings.HasPrefix(tp2, "00-"+traceID+"-") || strings.Contains(tp2, "00f067aa0ba902b7") {
		t.Fatalf("runner traceparent %q, want trace %s with a new parent span", tp2, traceID)
	}
	waitFor(t, func() bool { return len(spans.Ended()) >= 2 }, "server and client spans")
	clients := 0
	for _, s := range spans.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			// The attributes otelhttp's client spans had.
			clients++
			if s.Name() != "HTTP GET" || attrOf(s, "http.request.method") != "GET" ||
				attrOf(s, "http.response.status_code") != "200" || attrOf(s, "server.port") == "" ||
				!strings.HasSuffix(attrOf(s, "url.full"), "/health") {
				t.Errorf("client span %q attributes %v", s.Name(), s.Attributes())
			}
		}
		if s.SpanContext().TraceID().String() != traceID {
			t.Fatalf("span %q in trace %s", s.Name(), s.SpanContext().TraceID())
		}
		if got := attrOf(s, telemetry.AttrObjectID); got != "s1" {
			t.Errorf("span %q (%s) has ambient.object_id %q, want s1", s.Name(), s.SpanKind(), got)
		}
	}
	if clients != 1 {
		t.Errorf("%d client spans, want 1 (the runner call)", clients)
	}
}
