package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// traceIDLine is what --verbose prints on stderr.
var traceIDLine = regexp.MustCompile(`(?m)^trace id: ([0-9a-f]{32})$`)

// exportTo points the OTel SDK (which reads the process environment) and
// ambientctl's own check of the variables (the harness's lookup) at c.
// Not parallel: t.Setenv.
func exportTo(t *testing.T, h *harness, c *testenv.Collector, protocol string) {
	t.Helper()
	for k, v := range c.Env(protocol) {
		t.Setenv(k, v)
		h.env[k] = v
	}
}

// TestCommandIsOneTrace: every command is a trace of its own whose root is
// the command; its API calls are children of it, over either OTLP
// protocol, and --verbose prints the trace id.
func TestCommandIsOneTrace(t *testing.T) {
	for _, protocol := range []string{testenv.OTLPGRPC, testenv.OTLPHTTP} {
		t.Run(protocol, func(t *testing.T) {
			c := testenv.OTLP(t)
			api := testenv.API(t)
			h := newHarness(t, api)
			exportTo(t, h, c, protocol)

			out, stderr, code := h.run("--verbose", "-o", "json", "sessions", "create", "traced", "--project", "p1")
			if code != 0 {
				t.Fatalf("sessions create: exit %d, stderr %q", code, stderr)
			}
			m := traceIDLine.FindStringSubmatch(stderr)
			if m == nil {
				t.Fatalf("stderr %q has no trace id line", stderr)
			}
			if strings.Contains(out, "trace id") {
				t.Errorf("trace id printed on stdout, breaking -o json: %q", out)
			}
			traceID := m[1]
			// The spans were flushed before ambientctl returned.
			var root, call testenv.Span
			for _, s := range c.Spans() {
				if s.TraceID() != traceID || s.Service != ServiceName || s.Protocol != protocol {
					continue
				}
				switch s.GetName() {
				case "ambientctl sessions create":
					root = s
				case "ambient.v1.SessionService/CreateSession":
					call = s
				}
			}
			if root.Span == nil || root.ParentID() != "" {
				t.Fatalf("no root span \"ambientctl sessions create\" in trace %s: %v", traceID, c.Spans())
			}
			if call.Span == nil || call.ParentID() != root.SpanID() || call.Attr(string(telemetry.AttrObjectID)) == "" {
				t.Fatalf("CreateSession span %v is not a child of the command naming the new session", call.Span)
			}
			if id := call.Attr(string(telemetry.AttrObjectID)); root.Attr(string(telemetry.AttrObjectID)) != id {
				t.Errorf("the command's span names object %q, want the new session %s", root.Attr(string(telemetry.AttrObjectID)), id)
			}

			// A second command is a second trace.
			_, stderr2, code := h.run("-v", "sessions", "list")
			if m2 := traceIDLine.FindStringSubmatch(stderr2); code != 0 || m2 == nil || m2[1] == traceID {
				t.Fatalf("sessions list: exit %d, stderr %q; want a trace id other than %s", code, stderr2, traceID)
			}
		})
	}
}

// TestChatSendsTraceparent: the chat request carries the command's trace
// context, so the proxy (and through it the runner) joins the trace; the
// command's span names the session.
func TestChatSendsTraceparent(t *testing.T) {
	c := testenv.OTLP(t)
	got := make(chan string, 1) // the one request's traceparent
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"type\":\"RUN_FINISHED\"}\n\n")
	}))
	t.Cleanup(proxy.Close)
	h := newHarness(t, nil)
	h.env[EnvProxyURL] = proxy.URL
	exportTo(t, h, c, testenv.OTLPHTTP)

	_, stderr, code := h.run("-v", "chat", "s1", "hello")
	if code != 0 {
		t.Fatalf("chat: exit %d, stderr %q", code, stderr)
	}
	m := traceIDLine.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("stderr %q has no trace id line", stderr)
	}
	var tp string
	select {
	case tp = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy got no request")
	}
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[1] != m[1] {
		t.Fatalf("traceparent %q, want one in trace %s", tp, m[1])
	}
	var root, client testenv.Span
	for _, s := range c.Spans() {
		switch {
		case s.TraceID() == m[1] && s.GetName() == "ambientctl chat":
			root = s
		case s.TraceID() == m[1] && s.GetKind().String() == "SPAN_KIND_CLIENT":
			client = s
		}
	}
	if root.Span == nil || root.Attr(string(telemetry.AttrObjectID)) != "s1" {
		t.Fatalf("chat's root span %v does not name session s1", root.Span)
	}
	if client.Span == nil || client.ParentID() != root.SpanID() || client.SpanID() != parts[2] {
		t.Fatalf("the proxy request's span %v is not the chat's child that the traceparent %q names", client.Span, tp)
	}
	if _, err := trace.TraceIDFromHex(parts[1]); err != nil {
		t.Fatalf("traceparent %q: %v", tp, err)
	}
}

// TestNoTraceWithoutVerbose: without --verbose nothing about traces is
// printed, and without OTEL_* variables nothing is exported (the command
// still works).
func TestNoTraceWithoutVerbose(t *testing.T) {
	api := testenv.API(t)
	h := newHarness(t, api)
	_, stderr, code := h.run("sessions", "list")
	if code != 0 || stderr != "" {
		t.Fatalf("sessions list: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
}

// TestBadOTelVariableIsUsageError: a malformed OTEL_* variable is refused
// with its name before the command runs.
func TestBadOTelVariableIsUsageError(t *testing.T) {
	h := newHarness(t, testenv.API(t))
	h.env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
	_, stderr, code := h.run("sessions", "list")
	if code != 2 || !strings.Contains(stderr, "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("exit %d, stderr %q; want 2 naming OTEL_EXPORTER_OTLP_PROTOCOL", code, stderr)
	}
}
