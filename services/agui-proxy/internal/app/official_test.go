package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
)

// The tests in this file make the official AG-UI implementations the judge
// of the proxy (shared/design/REAL-PARTS.md, "AG-UI runners and clients"):
// runner.mjs answers runs with @ag-ui/encoder, client.mjs runs them with
// @ag-ui/client's HttpAgent through the proxy's /sessions/{id}/agui/run,
// which parses, validates and orders every event itself.

const (
	sseType   = "text/event-stream"
	protoType = "application/vnd.ag-ui.event+proto"
	// officialText is what runner.mjs's deltas add up to (7 words).
	officialText = "Hello wörld 日本語 🚀\n\nThrough the proxy"
)

// successfulRun waits for a client's result and fails the test with the
// client's error, if it surfaced one.
func successfulRun(t *testing.T, c *peer) peerMsg {
	t.Helper()
	res := c.result(t)
	if res.Error != nil || res.RunFailed != nil {
		t.Fatalf("official client failed the run: error %+v, onRunFailed %+v; stderr:\n%s", res.Error, res.RunFailed, c.stderr.String())
	}
	return res
}

// checkOfficialRun checks a successful run's result against what the
// runner sent: status 200, the runner's Content-Type, the runner's events
// in order from RUN_STARTED to RUN_FINISHED, and the message and tool call
// the client assembled from them. It returns the raw bytes the client read.
func checkOfficialRun(t *testing.T, res, sent peerMsg, wantType string) []byte {
	t.Helper()
	if res.Status != 200 || res.ContentType != wantType || sent.ContentType != wantType {
		t.Fatalf("status %d, Content-Type %q (runner sent %q), want 200 %q", res.Status, res.ContentType, sent.ContentType, wantType)
	}
	got := make([]string, len(res.Events))
	for i, ev := range res.Events {
		got[i] = ev.Type
	}
	if !slices.Equal(got, sent.Types) {
		t.Fatalf("client received events\n%v\nrunner sent\n%v", got, sent.Types)
	}
	if got[0] != "RUN_STARTED" || got[len(got)-1] != "RUN_FINISHED" {
		t.Fatalf("events from %s to %s, want RUN_STARTED to RUN_FINISHED", got[0], got[len(got)-1])
	}
	if len(res.NewMessages) != 1 || res.NewMessages[0].Role != "assistant" || res.NewMessages[0].Content != officialText {
		t.Fatalf("client assembled messages %+v, want the assistant's %q", res.NewMessages, officialText)
	}
	if tc := res.NewMessages[0].ToolCalls; len(tc) != 1 || tc[0].Function.Name != "lookup" || tc[0].Function.Arguments != `{"query":"agui"}` {
		t.Fatalf("client assembled tool calls %+v, want lookup({\"query\":\"agui\"})", tc)
	}
	return res.Raw
}

// TestOfficialClientRunThroughProxy: a run of the official runner, read by
// the official client through the proxy, in SSE and in the binary proto
// encoding: every event arrives, in order, validated by the client; the
// Content-Type and every byte pass through unchanged (the runner splits a
// frame inside a UTF-8 character, or inside the proto length prefix, and
// coalesces two others); the runner gets the client's RunAgentInput valid
// and the Accept the client asked for.
func TestOfficialClientRunThroughProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	e.register(t, r.endpoint(t, "s-official"))
	p := startProxy(t, e.proxyCfg())

	tests := []struct {
		name  string
		proto bool
		want  string
	}{
		{name: "sse", want: sseType},
		{name: "proto", proto: true, want: protoType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runID := "run-" + tc.name
			c := startNodeClient(t, clientRun{URL: p.session("s-official", "/agui/run"), RunID: runID,
				ThreadID: "thread-official", Text: "hello runner", Proto: tc.proto, ForwardedProps: runProps{Scenario: "stream"}})
			res := successfulRun(t, c)
			run := r.report(t, "run", runID)
			if !run.InputValid || run.RequestContentType != "application/json" || run.Accept != tc.want {
				t.Fatalf("runner got input valid=%v (%s), Content-Type %q, Accept %q; want a valid RunAgentInput, application/json, Accept %q",
					run.InputValid, run.Issues, run.RequestContentType, run.Accept, tc.want)
			}
			sent := r.report(t, "done", runID)
			raw := checkOfficialRun(t, res, sent, tc.want)
			if !bytes.Equal(raw, sent.Raw) {
				t.Fatalf("client read %d bytes, runner wrote %d: not byte-exact\nread:  %q\nwrote: %q", len(raw), len(sent.Raw), raw, sent.Raw)
			}
		})
	}
}

// TestOfficialClientKeepAlive: long silences of a runner, between events
// and inside one, through a proxy whose SSE_KEEPALIVE is short. The SSE
// client gets ": ping" comments in the silences between events, none inside
// the frame, and still receives the whole run (the official client would
// fail on a comment cut into a frame); the proto stream gets no comment at
// all. No silence is timed: the runner waits at each gap until the test
// releases it, and the test releases it once the client received a
// keep-alive (SSE, between events) or, where none must come, once a
// witness stream through the same proxy received three: by then the
// proxy's keep-alive timer has had two periods to write one.
func TestOfficialClientKeepAlive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	e.register(t, r.endpoint(t, "s-quiet"))
	cfg := e.proxyCfg()
	cfg.SSEKeepAlive = 25 * time.Millisecond
	p := startProxy(t, cfg)
	url := p.session("s-quiet", "/agui/run")

	// The witness: an SSE run that stays silent between events.
	witness := startNodeClient(t, clientRun{URL: url, RunID: "run-witness", ThreadID: "thread-witness",
		ForwardedProps: runProps{Scenario: "hang"}})
	witness.waitPings(t, 1)
	defer func() {
		witness.stop(t) // its connection closes: the proxy cancels the runner's request
		r.report(t, "closed", "run-witness")
	}()

	tests := []struct {
		name  string
		proto bool
		want  string
	}{
		{name: "sse", want: sseType},
		{name: "proto", proto: true, want: protoType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runID := "run-quiet-" + tc.name
			c := startNodeClient(t, clientRun{URL: url, RunID: runID, ThreadID: "thread-quiet", Proto: tc.proto,
				ForwardedProps: runProps{Scenario: "gaps"}})
			const gaps = 4 // runner.mjs: after RUN_STARTED, inside a frame, after a paragraph, before RUN_FINISHED
			for i := range gaps {
				g := r.waitFor(t, fmt.Sprintf("gap %d of %s", i, runID), func(m peerMsg) bool {
					return m.RunID == runID && (m.Msg == "gap" && m.Index == i || m.Msg == "closed")
				})
				if g.Msg == "closed" {
					break // the client left: its result says why
				}
				if tc.proto || g.Mid {
					witness.waitPings(t, witness.pings()+3)
				} else {
					c.waitPings(t, c.pings()+1)
				}
				r.send(t, "go "+runID)
			}
			res := successfulRun(t, c)
			sent := r.report(t, "done", runID)
			raw := checkOfficialRun(t, res, sent, tc.want)
			if tc.proto {
				if !bytes.Equal(raw, sent.Raw) {
					t.Fatalf("proto stream changed on its way: read %q, runner wrote %q", raw, sent.Raw)
				}
				return
			}
			if res.Pings < gaps-1 {
				t.Fatalf("client got %d keep-alives, want one at least in each of the %d silences between events", res.Pings, gaps-1)
			}
			ping := []byte(": ping\n\n")
			for i := bytes.Index(raw, ping); i >= 0; {
				if i > 0 && !bytes.HasSuffix(raw[:i], []byte("\n\n")) {
					t.Fatalf("keep-alive at byte %d, inside a frame: %q", i, raw[max(0, i-40):i+len(ping)])
				}
				next := bytes.Index(raw[i+1:], ping)
				if next < 0 {
					break
				}
				i += 1 + next
			}
			if stripped := bytes.ReplaceAll(raw, ping, nil); !bytes.Equal(stripped, sent.Raw) {
				t.Fatalf("without its keep-alives the stream is not the runner's:\nread:  %q\nwrote: %q", stripped, sent.Raw)
			}
		})
	}
}

// TestOfficialClientAbortCancelsRunner: a client that aborts its run
// (HttpAgent.abortRun, or the AbortController it passed to runAgent) ends
// the runner's request through the proxy, while the client process, and so
// nothing but the abort, could still hold the connection.
func TestOfficialClientAbortCancelsRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	e.register(t, r.endpoint(t, "s-abort"))
	p := startProxy(t, e.proxyCfg())

	tests := []struct {
		name  string
		how   string
		proto bool
	}{
		{name: "abortRun", how: "abortRun"},
		{name: "signal", how: "signal"},
		{name: "signal proto", how: "signal", proto: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runID := "run-abort-" + strings.ReplaceAll(tc.name, " ", "-")
			c := startNodeClient(t, clientRun{URL: p.session("s-abort", "/agui/run"), RunID: runID, ThreadID: "thread-abort",
				Proto: tc.proto, Abort: &clientAbort{How: tc.how, After: 2}, ForwardedProps: runProps{Scenario: "hang", Words: 3}})
			c.waitFor(t, "its abort", func(m peerMsg) bool { return m.Msg == "aborted" })
			r.report(t, "closed", runID)
			if c.exited() {
				t.Fatal("the client process exited: its connection may have closed with it, not by the abort")
			}
		})
	}
}

// TestOfficialClientSurfacesProxyErrors: what the proxy refuses itself
// reaches the official client as an HTTP error with the proxy's JSON body
// parsed (the client parses it only for Content-Type application/json),
// and a runner's own error passes through the same way.
func TestOfficialClientSurfacesProxyErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	e.register(t, r.endpoint(t, "s-errors"))
	// A registered runner that is not listening any more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := &runner{addr: ln.Addr().String(), pid: os.Getpid()}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	e.register(t, dead.endpoint(t, "s-dead"))

	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.proxyCfg()
	cfg.Auth, cfg.TokensFile = auth.ModeToken, tokens
	cfg.MaxBodyBytes = 4096
	p := startProxy(t, cfg)
	bearer := map[string]string{"Authorization": "Bearer " + goodToken}

	tests := []struct {
		name     string
		session  string
		headers  map[string]string
		text     string
		scenario string
		code     int
		payload  string // compact JSON, in the order the proxy encodes it
	}{
		{name: "unauthenticated", session: "s-errors", code: 401, payload: `{"error":"unauthorized"}`},
		{name: "unknown session", session: "s-missing", headers: bearer, code: 404, payload: `{"error":"unknown session"}`},
		{name: "body too large", session: "s-errors", headers: bearer, text: strings.Repeat("x", 8192), code: 413,
			payload: `{"error":"request body larger than 4096 bytes"}`},
		{name: "runner unreachable", session: "s-dead", headers: bearer, code: 502, payload: `{"error":"runner unreachable"}`},
		{name: "runner error passes through", session: "s-errors", headers: bearer, scenario: "fail", code: 500,
			payload: `{"detail":"runner failed on purpose"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runID := "run-err-" + strings.ReplaceAll(tc.name, " ", "-")
			c := startNodeClient(t, clientRun{URL: p.session(tc.session, "/agui/run"), RunID: runID, ThreadID: "thread-errors",
				Headers: tc.headers, Text: tc.text, ForwardedProps: runProps{Scenario: tc.scenario}})
			res := c.result(t)
			ce := res.Error
			if ce == nil || ce.Status != tc.code {
				t.Fatalf("client error %+v, want HTTP %d", ce, tc.code)
			}
			var payload bytes.Buffer
			if err := json.Compact(&payload, ce.Payload); err != nil || payload.String() != tc.payload {
				t.Fatalf("client parsed the body as %s, want the JSON %s", ce.Payload, tc.payload)
			}
			if want := fmt.Sprintf("HTTP %d: %s", tc.code, tc.payload); ce.Message != want {
				t.Fatalf("client error message %q, want %q", ce.Message, want)
			}
			if res.RunFailed == nil || res.RunFailed.Message != ce.Message || len(res.Events) != 0 {
				t.Fatalf("onRunFailed got %+v and %d events, want the same error and none", res.RunFailed, len(res.Events))
			}
			if tc.scenario != "" {
				if run := r.report(t, "run", runID); run.Authorization != "" {
					t.Fatalf("the runner got the client's credentials: Authorization %q", run.Authorization)
				}
			}
		})
	}
}

// TestOfficialRunnerNegotiatesThroughProxy: the encoding a runner answers
// in is the one its official encoder negotiates from the client's Accept,
// through the proxy as directly, for every way of naming AG-UI's binary
// encoding: media types are case-insensitive (RFC 9110, section 8.3.1) and
// Accept may come in several header lines, which the runner's server joins.
// The one deliberate difference: a generic Accept such as curl's */*, which
// the official encoder answers in the binary encoding, gets SSE through the
// proxy, as the original proxy asked runners for.
func TestOfficialRunnerNegotiatesThroughProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	e.register(t, r.endpoint(t, "s-accept"))
	p := startProxy(t, e.proxyCfg())

	tests := []struct {
		name    string
		accept  []string // header lines
		viaWant string   // through the proxy; empty: as directly
	}{
		{name: "sse", accept: []string{sseType}},
		{name: "proto", accept: []string{protoType}},
		{name: "proto in other case", accept: []string{"Application/VND.AG-UI.Event+Proto"}},
		{name: "proto in a second line", accept: []string{sseType, protoType}},
		{name: "proto refused", accept: []string{protoType + ";q=0, " + sseType}},
		{name: "generic", accept: []string{"*/*"}, viaWant: sseType},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			run := func(url, runID string) (contentType, accept string) {
				t.Helper()
				var in map[string]any
				if err := json.Unmarshal([]byte(runInput("hello")), &in); err != nil {
					t.Fatal(err)
				}
				in["runId"], in["forwardedProps"] = runID, runProps{Scenario: "stream"}
				body, err := json.Marshal(in)
				if err != nil {
					t.Fatal(err)
				}
				req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header["Accept"] = tc.accept
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: status %d, read %v", url, resp.StatusCode, err)
				}
				return resp.Header.Get("Content-Type"), r.report(t, "run", runID).Accept
			}
			directType, directAccept := run("http://"+r.addr+"/", fmt.Sprintf("run-accept-%d-direct", i))
			viaType, viaAccept := run(p.session("s-accept", "/agui/run"), fmt.Sprintf("run-accept-%d-proxied", i))
			want := tc.viaWant
			if want == "" {
				want = directType
				if viaAccept != directAccept {
					t.Errorf("the runner saw Accept %q through the proxy, %q directly", viaAccept, directAccept)
				}
			}
			if viaType != want {
				t.Fatalf("Accept %q: the runner answered %q through the proxy, want %q (directly: %q)", tc.accept, viaType, want, directType)
			}
		})
	}
}

// The RUN_ERROR events the proxy adds to a run it ends itself.
const (
	runnerGoneCode    = "RUNNER_GONE"
	runnerGoneMessage = "the session's runner stopped or moved; the run did not finish"
	shutdownCode      = "PROXY_SHUTDOWN"
	shutdownMessage   = "agui-proxy is shutting down; retry the request"
	// partialText is what runner.mjs's first three deltas add up to.
	partialText = "Hello wörld 日本語"
)

// runnerScenario is a runner.mjs script whose run the proxy ends, and what
// the official client must make of it.
type runnerScenario struct {
	name     string
	scenario string // runner.mjs: "hang", "finished" or "midframe"
	proto    bool
}

var proxyEndedScenarios = []runnerScenario{
	{name: "sse", scenario: "hang"},
	{name: "proto", scenario: "hang", proto: true},
	{name: "sse finished", scenario: "finished"},
	{name: "proto finished", scenario: "finished", proto: true},
	{name: "sse mid-frame", scenario: "midframe"},
	{name: "proto mid-frame", scenario: "midframe", proto: true},
}

// startEndedRun starts the official client on run runID of sc through url
// and waits until the runner has written all it will and the client has
// read it. It returns the client and the runner's gap report (the bytes it
// sent).
func startEndedRun(t *testing.T, r *nodeRunner, url, runID string, sc runnerScenario) (*peer, peerMsg) {
	t.Helper()
	c := startNodeClient(t, clientRun{URL: url, RunID: runID, ThreadID: "thread-ended", Proto: sc.proto,
		ForwardedProps: runProps{Scenario: sc.scenario, Words: 3}})
	sent := r.report(t, "gap", runID)
	c.waitFor(t, fmt.Sprintf("the runner's %d bytes", sent.Bytes), func(m peerMsg) bool { return m.Msg == "read" && m.Bytes >= sent.Bytes })
	return c, sent
}

// checkProxyEnded checks what the official client made of a run of sc
// that the proxy ended (code and message: the RUN_ERROR it adds):
//   - unfinished ("hang"): the runner's events, then the proxy's RUN_ERROR,
//     which the client's verifier takes and its onRunErrorEvent subscriber
//     gets; no transport error (the response ended cleanly), the partial
//     message assembled; the bytes are the runner's and then the RUN_ERROR
//     frame;
//   - finished: the whole run as the runner sent it, nothing added;
//   - cut inside a frame: the client's transfer fails (the response was
//     aborted): the runner's bytes arrived, half frame included, nothing
//     was added, and no event came out of the half frame.
func checkProxyEnded(t *testing.T, c *peer, res, sent peerMsg, sc runnerScenario, code, message string) {
	t.Helper()
	types := make([]string, len(res.Events))
	for i, ev := range res.Events {
		types[i] = ev.Type
	}
	stderr := c.stderr.String()
	switch sc.scenario {
	case "hang":
		if res.Error != nil || res.RunFailed != nil {
			t.Fatalf("official client failed: error %+v, onRunFailed %+v; stderr:\n%s", res.Error, res.RunFailed, stderr)
		}
		want := []string{"RUN_STARTED", "STEP_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "RUN_ERROR"}
		if !slices.Equal(types, want) {
			t.Fatalf("client received events\n%v\nwant the runner's, then the proxy's RUN_ERROR\n%v", types, want)
		}
		last := res.Events[len(res.Events)-1]
		if last.Code != code || last.Message != message {
			t.Fatalf("RUN_ERROR code %q message %q, want %q %q", last.Code, last.Message, code, message)
		}
		if re := res.RunError; re == nil || re.Code != code || re.Message != message {
			t.Fatalf("onRunErrorEvent got %+v, want the proxy's RUN_ERROR %s", re, code)
		}
		if len(res.NewMessages) != 1 || res.NewMessages[0].Content != partialText {
			t.Fatalf("client assembled %+v, want the partial message %q", res.NewMessages, partialText)
		}
		if !bytes.HasPrefix(res.Raw, sent.Raw) || len(res.Raw) == len(sent.Raw) {
			t.Fatalf("client read %q, want the runner's %q and then the RUN_ERROR", res.Raw, sent.Raw)
		}
		if !sc.proto {
			frame := fmt.Sprintf("data: {\"type\":\"RUN_ERROR\",\"message\":%q,\"code\":%q}\n\n", message, code)
			if added := string(res.Raw[len(sent.Raw):]); added != frame {
				t.Fatalf("proxy added %q, want the frame %q", added, frame)
			}
		}
	case "finished":
		if res.Error != nil || res.RunFailed != nil || res.RunError != nil {
			t.Fatalf("official client failed: error %+v, onRunFailed %+v, RUN_ERROR %+v; stderr:\n%s", res.Error, res.RunFailed, res.RunError, stderr)
		}
		if len(types) == 0 || types[len(types)-1] != "RUN_FINISHED" || slices.Contains(types, "RUN_ERROR") {
			t.Fatalf("client received events %v, want the whole run and nothing after RUN_FINISHED", types)
		}
		if !bytes.Equal(res.Raw, sent.Raw) {
			t.Fatalf("client read %q, runner wrote %q: the proxy added to a finished run", res.Raw, sent.Raw)
		}
	case "midframe":
		if res.Error == nil || res.RunError != nil || slices.Contains(types, "RUN_ERROR") {
			t.Fatalf("client error %+v, RUN_ERROR %+v, events %v; want a failed transfer and no RUN_ERROR", res.Error, res.RunError, types)
		}
		// The client's decoders say "ended mid-frame" or fail on the cut
		// JSON when a response ends cleanly inside a frame; an aborted
		// transfer fails in fetch itself.
		if res.Error.Name != "TypeError" || strings.Contains(res.Error.Message, "mid-frame") {
			t.Fatalf("client error %s, want the transfer's failure (TypeError), not a decoder's", res.Error)
		}
		if len(types) != 6 {
			t.Fatalf("client received events %v, want the runner's six whole ones", types)
		}
		if !bytes.Equal(res.Raw, sent.Raw) {
			t.Fatalf("client read %q, runner wrote %q", res.Raw, sent.Raw)
		}
	default:
		t.Fatalf("unknown scenario %q", sc.scenario)
	}
}

// TestOfficialClientRunnerGone: the session's endpoint leaves the routing
// table (the session stopped, or moved to another runner-manager) while a
// run streams. The official client, in SSE and in the binary encoding,
// ends the run with the proxy's RUN_ERROR (RUNNER_GONE) instead of taking
// it for a success; a run whose RUN_FINISHED had passed gets nothing added;
// a runner silent inside a frame gets the client's transfer failed, never
// a half frame and a clean end (see checkProxyEnded).
func TestOfficialClientRunnerGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	p := startProxy(t, e.proxyCfg())
	for i, sc := range proxyEndedScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			session := fmt.Sprintf("s-gone-%d", i)
			e.register(t, r.endpoint(t, session))
			c, sent := startEndedRun(t, r, p.session(session, "/agui/run"), "run-"+session, sc)
			e.release(t, session)
			res := c.result(t)
			r.report(t, "closed", sent.RunID)
			checkProxyEnded(t, c, res, sent, sc, runnerGoneCode, runnerGoneMessage)
		})
	}
}

// TestOfficialClientShutdownGrace: a run still streaming when the proxy's
// shutdown grace (SHUTDOWN_TIMEOUT) is over ends, for the official client,
// with the proxy's RUN_ERROR (PROXY_SHUTDOWN), in SSE and in the binary
// encoding, as TestOfficialClientRunnerGone's runs do; the proxy's Run then
// returns nil.
func TestOfficialClientShutdownGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startNodeRunner(t)
	for i, sc := range proxyEndedScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			session := fmt.Sprintf("s-shutdown-%d", i)
			e.register(t, r.endpoint(t, session))
			cfg := e.proxyCfg()
			cfg.ShutdownTimeout = 200 * time.Millisecond
			p := startProxy(t, cfg)
			c, sent := startEndedRun(t, r, p.session(session, "/agui/run"), "run-"+session, sc)
			if err := p.stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			res := c.result(t)
			r.report(t, "closed", sent.RunID)
			checkProxyEnded(t, c, res, sent, sc, shutdownCode, shutdownMessage)
		})
	}
}
