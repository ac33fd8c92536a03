package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// traceIDLine is what ambientctl --verbose prints on stderr.
var traceIDLine = regexp.MustCompile(`(?m)^trace id: ([0-9a-f]{32})$`)

// spanWait bounds the wait for spans: the services batch them for 100 ms
// (testenv's OTEL_BSP_SCHEDULE_DELAY), so they come well within it.
const spanWait = 30 * time.Second

// TestTraces is acceptance 1 of issue 16. For each OTLP protocol a real
// receiver runs in the test and the whole stack (every service a process,
// configured by nothing but the standard OTEL_* variables it inherits from
// devstack) exports to it while a session goes from create to Stopped and a
// chat runs through the proxy. The test asserts that spans arrive over the
// protocol from every service, and metrics too; that the session's ADDED event is one trace
// holding the informer's publish and, as its children, each consumer's
// CONSUMER span, runner-manager's with the API calls its handler made as
// descendants, down to the API's server spans; that every span of every
// trace touching the session names it (ambient.object_id); and that the
// chat is one trace from ambientctl through the proxy's server and client
// spans to the runner, which logs the proxy's request span as its parent.
func TestTraces(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, protocol := range []string{testenv.OTLPGRPC, testenv.OTLPHTTP} {
		t.Run(protocol, func(t *testing.T) { traceSessionLife(t, protocol) })
	}
}

func traceSessionLife(t *testing.T, protocol string) {
	c := testenv.OTLP(t)
	var env []string
	for k, v := range c.Env(protocol) {
		env = append(env, k+"="+v)
	}
	s := startStackWith(t, stackOpts{env: env})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("spans received:\n%s", dumpSpans(c.Spans()))
		}
	})

	s.rest(http.MethodPost, "/projects", map[string]any{"name": "traced"})
	created, createTrace := s.tracedCtl(t, env, "-o", "json", "sessions", "create", "followed", "--project", "traced")
	var sess struct {
		Metadata struct {
			ID string `json:"id"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(created), &sess); err != nil || sess.Metadata.ID == "" {
		t.Fatalf("sessions create printed %q: %v", created, err)
	}
	id := sess.Metadata.ID
	s.waitPhase(id, 60*time.Second, "Running")

	var chatTrace string
	testenv.Eventually(t, 20*time.Second, func() error {
		out, tr, err := s.tryTracedCtl(env, "chat", id, "hello traces")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "hello traces") {
			return fmt.Errorf("chat output %q", out)
		}
		chatTrace = tr
		return nil
	})
	_, stopTrace := s.tracedCtl(t, env, "sessions", "stop", id)
	s.waitPhase(id, 30*time.Second, "Stopped")

	services := []string{"ambientctl", "memapi", "informer", "runner-manager", "event-tally", "agui-proxy"}
	t.Run("spans arrive from every service over "+protocol, func(t *testing.T) {
		c.WaitSpan(t, spanWait, "", func(testenv.Span) bool {
			return len(missingServices(c.Spans(), services)) == 0
		})
		for _, sp := range c.Spans() {
			if sp.Protocol != protocol {
				t.Fatalf("span %s of %s arrived over %s", sp.GetName(), sp.Service, sp.Protocol)
			}
		}
	})

	t.Run("metrics are pushed over "+protocol, func(t *testing.T) {
		want := map[string]string{
			"informer":       "informer.events.published",
			"runner-manager": "consumer_group.handled",
			"event-tally":    "event_tally.events",
			"agui-proxy":     "agui_proxy_requests",
		}
		testenv.Eventually(t, spanWait, func() error {
			for svc, name := range want {
				if !c.HasMetric(svc, name) {
					return fmt.Errorf("no metric %s from %s over OTLP", name, svc)
				}
			}
			return nil
		})
	})

	t.Run("commands are traces through the API", func(t *testing.T) {
		for _, tc := range []struct{ trace, command, server string }{
			{createTrace, "ambientctl sessions create", "ambient.v1.SessionService/CreateSession"},
			{stopTrace, "ambientctl sessions stop", "POST /api/ambient/v1/sessions/{id}/stop"},
		} {
			var root, server testenv.Span
			testenv.Eventually(t, spanWait, func() error {
				tr := spansOf(c.Spans(), tc.trace)
				root = find(tr, func(sp testenv.Span) bool { return sp.GetName() == tc.command && sp.ParentID() == "" })
				server = find(tr, func(sp testenv.Span) bool {
					return sp.Service == "memapi" && sp.GetKind() == tracepb.Span_SPAN_KIND_SERVER && strings.HasPrefix(sp.GetName(), tc.server)
				})
				if root.Span == nil || server.Span == nil {
					return fmt.Errorf("trace %s of %q has no root command span or no API server span %q", tc.trace, tc.command, tc.server)
				}
				return nil
			})
			if !descends(spansOf(c.Spans(), tc.trace), server, root) {
				t.Errorf("%q: the API's span %s is not under the command's", tc.command, server.GetName())
			}
		}
	})

	t.Run("the ADDED event's trace holds each consumer's handling", func(t *testing.T) {
		publish := c.WaitSpan(t, spanWait, "informer publish sessions ADDED", func(sp testenv.Span) bool {
			return sp.Service == "informer" && sp.GetName() == "publish sessions ADDED" && sp.Attr(string(telemetry.AttrObjectID)) == id
		})
		if publish.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER {
			t.Errorf("publish span kind %s, want PRODUCER", publish.GetKind())
		}
		consumers := map[string]testenv.Span{}
		var apiServer testenv.Span
		testenv.Eventually(t, spanWait, func() error {
			tr := spansOf(c.Spans(), publish.TraceID())
			for _, svc := range []string{"runner-manager", "event-tally"} {
				consumers[svc] = find(tr, func(sp testenv.Span) bool {
					return sp.Service == svc && sp.GetKind() == tracepb.Span_SPAN_KIND_CONSUMER && sp.ParentID() == publish.SpanID()
				})
				if consumers[svc].Span == nil {
					return fmt.Errorf("no CONSUMER span of %s under the publish", svc)
				}
			}
			// runner-manager's handler writes the session's status; its
			// client span is under the consumer span, the API's server span
			// under the client span.
			apiServer = find(tr, func(sp testenv.Span) bool {
				return sp.Service == "memapi" && sp.GetKind() == tracepb.Span_SPAN_KIND_SERVER &&
					strings.HasPrefix(sp.GetName(), "ambient.v1.SessionService/UpdateSessionStatus")
			})
			if apiServer.Span == nil {
				return fmt.Errorf("no UpdateSessionStatus server span in the ADDED trace")
			}
			return nil
		})
		tr := spansOf(c.Spans(), publish.TraceID())
		if !descends(tr, apiServer, consumers["runner-manager"]) {
			t.Errorf("the API write %s is not under runner-manager's consumer span", apiServer.GetName())
		}
		client := byID(tr, apiServer.ParentID())
		if client.Service != "runner-manager" || client.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("the API write's parent is %s (%s, %s), want runner-manager's client span", client.GetName(), client.Service, client.GetKind())
		}
	})

	t.Run("the Stopped write is in the trace of the stop's event", func(t *testing.T) {
		testenv.Eventually(t, spanWait, func() error {
			all := c.Spans()
			handled := find(all, func(sp testenv.Span) bool {
				return sp.Service == "runner-manager" && sp.GetName() == "reconcile session" &&
					sp.Attr(logkey.SessionID) == id && sp.Attr(logkey.Phase) == "Stopping"
			})
			if handled.Span == nil {
				return fmt.Errorf("no runner-manager span handling session %s in phase Stopping", id)
			}
			write := find(spansOf(all, handled.TraceID()), func(sp testenv.Span) bool {
				return sp.Service == "runner-manager" && sp.GetKind() == tracepb.Span_SPAN_KIND_CLIENT &&
					strings.HasPrefix(sp.GetName(), "ambient.v1.SessionService/UpdateSessionStatus")
			})
			if write.Span == nil {
				return fmt.Errorf("the Stopping event's trace %s has no UpdateSessionStatus call of runner-manager", handled.TraceID())
			}
			return nil
		})
	})

	t.Run("every span of the session names it", func(t *testing.T) {
		all := c.Spans()
		traces := map[string]bool{}
		for _, sp := range all {
			if sp.Attr(string(telemetry.AttrObjectID)) == id {
				traces[sp.TraceID()] = true
			}
		}
		if len(traces) < 4 {
			t.Fatalf("spans naming session %s are in %d traces, want at least create, ADDED, chat and stop", id, len(traces))
		}
		for _, sp := range all {
			if traces[sp.TraceID()] && sp.Attr(string(telemetry.AttrObjectID)) != id {
				t.Errorf("span %q of %s (%s) in a trace of session %s names object %q", sp.GetName(), sp.Service, sp.GetKind(), id, sp.Attr(string(telemetry.AttrObjectID)))
			}
		}
		for _, tr := range []string{createTrace, chatTrace, stopTrace} {
			if !traces[tr] {
				t.Errorf("ambientctl's trace %s has no span naming session %s", tr, id)
			}
		}
	})

	t.Run("the chat goes from ambientctl through the proxy to the runner", func(t *testing.T) {
		var root, send, proxyServer, proxyClient testenv.Span
		testenv.Eventually(t, spanWait, func() error {
			tr := spansOf(c.Spans(), chatTrace)
			root = find(tr, func(sp testenv.Span) bool { return sp.GetName() == "ambientctl chat" && sp.ParentID() == "" })
			send = find(tr, func(sp testenv.Span) bool {
				return sp.Service == "ambientctl" && sp.GetKind() == tracepb.Span_SPAN_KIND_CLIENT && sp.ParentID() == root.SpanID()
			})
			proxyServer = find(tr, func(sp testenv.Span) bool {
				return sp.Service == "agui-proxy" && sp.GetKind() == tracepb.Span_SPAN_KIND_SERVER && sp.ParentID() == send.SpanID()
			})
			proxyClient = find(tr, func(sp testenv.Span) bool {
				return sp.Service == "agui-proxy" && sp.GetKind() == tracepb.Span_SPAN_KIND_CLIENT && sp.ParentID() == proxyServer.SpanID()
			})
			if root.Span == nil || send.Span == nil || proxyServer.Span == nil || proxyClient.Span == nil {
				return fmt.Errorf("chat trace %s: command %v, request %v, proxy server %v, proxy client %v",
					chatTrace, root.Span != nil, send.Span != nil, proxyServer.Span != nil, proxyClient.Span != nil)
			}
			return nil
		})
		// The runner is no OTel service; its log names the trace and the
		// proxy's request span it was called from.
		logPath := filepath.Join(s.stateDir, "workspaces", id, "stderr.log")
		raw, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if !runnerLogged(raw, chatTrace, proxyClient.SpanID()) {
			t.Errorf("runner log %s has no \"run started\" of trace %s from span %s:\n%s", logPath, chatTrace, proxyClient.SpanID(), raw)
		}
	})
}

// tracedCtl runs ambientctl --verbose with env and returns its stdout and
// the trace id it printed; a failure fails the test.
func (s *stack) tracedCtl(t *testing.T, env []string, args ...string) (stdout, traceID string) {
	t.Helper()
	out, tr, err := s.tryTracedCtl(env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out, tr
}

// tryTracedCtl is tracedCtl reporting instead of failing (for Eventually).
func (s *stack) tryTracedCtl(env []string, args ...string) (stdout, traceID string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := s.ambientctlCmd(ctx, env, append([]string{"--verbose"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("ambientctl %v: %w: %s", args, err, errb.String())
	}
	m := traceIDLine.FindStringSubmatch(errb.String())
	if m == nil {
		return "", "", fmt.Errorf("ambientctl %v printed no trace id: %q", args, errb.String())
	}
	return out.String(), m[1], nil
}

// runnerLogged reports whether the runner's JSON log has a "run started"
// line naming the trace and parent span.
func runnerLogged(log []byte, traceID, parentID string) bool {
	for line := range bytes.Lines(log) {
		var rec struct {
			Msg      string `json:"msg"`
			TraceID  string `json:"trace_id"`
			ParentID string `json:"parent_span_id"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "run started" && rec.TraceID == traceID && rec.ParentID == parentID {
			return true
		}
	}
	return false
}

func missingServices(spans []testenv.Span, want []string) []string {
	var out []string
	for _, svc := range want {
		if !slices.ContainsFunc(spans, func(sp testenv.Span) bool { return sp.Service == svc }) {
			out = append(out, svc)
		}
	}
	return out
}

func spansOf(spans []testenv.Span, traceID string) []testenv.Span {
	var out []testenv.Span
	for _, sp := range spans {
		if sp.TraceID() == traceID {
			out = append(out, sp)
		}
	}
	return out
}

// find returns the first span match accepts (a zero Span when none).
func find(spans []testenv.Span, match func(testenv.Span) bool) testenv.Span {
	for _, sp := range spans {
		if match(sp) {
			return sp
		}
	}
	return testenv.Span{}
}

func byID(spans []testenv.Span, id string) testenv.Span {
	return find(spans, func(sp testenv.Span) bool { return sp.SpanID() == id })
}

// descends reports whether span is below ancestor in the trace spans.
func descends(spans []testenv.Span, span, ancestor testenv.Span) bool {
	for cur := span; cur.Span != nil && cur.ParentID() != ""; {
		if cur.ParentID() == ancestor.SpanID() {
			return true
		}
		cur = byID(spans, cur.ParentID())
	}
	return false
}

// dumpSpans lists spans by trace, for a failing test's log.
func dumpSpans(spans []testenv.Span) string {
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].TraceID() < spans[j].TraceID() })
	var b strings.Builder
	for _, sp := range spans {
		fmt.Fprintf(&b, "%s %s<-%s %-15s %-22s %-60q object=%s\n", sp.TraceID(), sp.SpanID(), sp.ParentID(),
			sp.Service, sp.GetKind(), sp.GetName(), sp.Attr(string(telemetry.AttrObjectID)))
	}
	return b.String()
}
