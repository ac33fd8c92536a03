package app_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
)

// The routes the platform's runner (ambient-code/platform, ambient-runner)
// needs beyond the original's: its live tap of a thread, GET
// /events/{thread_id}, and the platform backend's run path, which the
// runner POSTs its INITIAL_PROMPT to ($BACKEND_API_URL/projects/{project}/
// agentic-sessions/{id}/agui/run) and whose answer is the run's ids as
// JSON, not the run's stream (the backend's HandleAGUIRunProxy).

// backendRunPath is the platform backend's run path on the proxy.
func backendRunPath(p *proxyHandle, project, id string) string {
	return p.url + "/projects/" + project + "/agentic-sessions/" + id + "/agui/run"
}

// platformRun POSTs body as the platform's runner does (aiohttp, json=:
// Content-Type application/json, Accept */*, the BOT_TOKEN as bearer).
func platformRun(t testing.TB, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "*/*")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

// runAccepted decodes the backend run path's 200 answer.
func runAccepted(t testing.TB, resp *http.Response) (runID, threadID string) {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s), want 200", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	var ids struct {
		RunID    string `json:"runId"`
		ThreadID string `json:"threadId"`
	}
	if err := json.Unmarshal(b, &ids); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return ids.RunID, ids.ThreadID
}

// inProject registers runner r for session id in project.
func (e *env) inProject(t testing.TB, r *runner, id, project string) {
	t.Helper()
	ep := r.endpoint(t, id)
	ep.ProjectID = project
	e.register(t, ep)
}

// registerServerIn serves session id of project with handler, an HTTP
// server in this process standing in for a runner.
func (e *env) registerServerIn(t *testing.T, id, project string, handler http.HandlerFunc) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	e.register(t, registry.Endpoint{SessionID: id, ProjectID: project, Owner: "test-manager", Host: u.Hostname(), Port: port,
		PID: 1, StartedAt: time.Now().UTC(), State: registry.StateRunning})
}

// watchEvent reads SSE frames from a watcher's stream until a frame of
// type typ and returns its JSON.
func watchEvent(t testing.TB, br *bufio.Reader, typ string) map[string]any {
	t.Helper()
	for {
		var cur strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("watch stream ended before %s: %v", typ, err)
			}
			if line == "\n" {
				break
			}
			cur.WriteString(line)
		}
		payload, ok := strings.CutPrefix(strings.TrimSpace(cur.String()), "data: ")
		if !ok {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(payload), &ev); err != nil {
			t.Fatalf("frame %q: %v", cur.String(), err)
		}
		if ev["type"] == typ {
			return ev
		}
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestBackendRunPath: the platform runner's POST of its INITIAL_PROMPT to
// the backend's run path, through the proxy, is answered 200 with the
// run's ids as JSON (what the runner reads with resp.json()), the run goes
// to the session's runner, whose events reach a browser's stream of the
// session, and the proxy reads the run's stream to its end. A run without
// ids gets the backend's: the session as thread, a UUID as run, which the
// runner runs under. A session of another project is unknown on a
// project's path. Before, every such path was 404 "not found".
func TestBackendRunPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-backend", "DEMO_WORD_DELAY=1ms")
	e.inProject(t, r, "s-backend", "proj-a")
	other := startRunner(t, "s-other")
	e.inProject(t, other, "s-other", "proj-b")
	p := startProxy(t, e.proxyCfg())
	metrics := "http://" + p.app.MetricsAddr() + "/metrics"

	// A browser's view of the session, opened before the run: the demo
	// runner's watch stream, subscribed once its headers arrived.
	watch := get(t, p.session("s-backend", "/agui/events"))
	defer watch.Body.Close()
	if watch.StatusCode != http.StatusOK {
		t.Fatalf("watch: status %d", watch.StatusCode)
	}
	br := bufio.NewReader(watch.Body)

	runID, threadID := runAccepted(t, platformRun(t, backendRunPath(p, "proj-a", "s-backend"), runInput("hello from the initial prompt"),
		"Authorization", "Bearer bot-token"))
	if runID != "run-1" || threadID != "thread-1" {
		t.Fatalf("answer runId %q threadId %q, want the input's run-1, thread-1", runID, threadID)
	}
	if ev := watchEvent(t, br, "RUN_STARTED"); ev["runId"] != "run-1" || ev["threadId"] != "thread-1" {
		t.Fatalf("watcher's RUN_STARTED %v", ev)
	}
	watchEvent(t, br, "RUN_FINISHED")
	// The proxy read the run's stream to its end: the runner finished the
	// run (a run whose stream nobody reads is cancelled by the demo runner
	// when its connection closes).
	testenv.Eventually(t, 10*time.Second, func() error {
		if s := r.stats(t); s["runs_finished"] != 1 || s["active_runs"] != 0 {
			return errorf("runner stats %v, want 1 run finished", s)
		}
		if v, _ := metricValue(t, metrics, "agui_proxy_active_streams", `route="backend_run"`); v != 0 {
			return errorf("active backend_run streams %v, want 0", v)
		}
		return nil
	})
	if v, _ := metricValue(t, metrics, "agui_proxy_requests_total", `route="backend_run"`, `code="200"`); v != 1 {
		t.Errorf("backend_run 200 requests %v, want 1", v)
	}
	if v, _ := metricValue(t, metrics, "agui_proxy_streamed_bytes_total", `route="backend_run"`); v <= 0 {
		t.Errorf("backend_run bytes drained %v, want > 0", v)
	}

	// Without ids: the backend's defaults, and the runner runs under them.
	runID, threadID = runAccepted(t, platformRun(t, backendRunPath(p, "proj-a", "s-backend"),
		`{"messages":[{"id":"m2","role":"user","content":"second"}]}`))
	if threadID != "s-backend" || !uuidV4.MatchString(runID) {
		t.Fatalf("answer runId %q threadId %q, want a UUID and the session id", runID, threadID)
	}
	if ev := watchEvent(t, br, "RUN_STARTED"); ev["runId"] != runID || ev["threadId"] != threadID {
		t.Fatalf("watcher's RUN_STARTED %v, want run %s thread %s", ev, runID, threadID)
	}

	// Refused before any runner is called.
	for _, tc := range []struct {
		name, url, method, body string
		code                    int
		errMsg                  string
	}{
		{name: "session of another project", url: backendRunPath(p, "proj-a", "s-other"), body: runInput("x"), code: 404, errMsg: "unknown session"},
		{name: "project not the session's", url: backendRunPath(p, "proj-b", "s-backend"), body: runInput("x"), code: 404, errMsg: "unknown session"},
		{name: "unknown session: not registered yet", url: backendRunPath(p, "proj-a", "s-none"), body: runInput("x"), code: 503, errMsg: "runner not available"},
		{name: "invalid project", url: p.url + "/projects/%2E%2E/agentic-sessions/s-backend/agui/run", body: runInput("x"), code: 404, errMsg: "unknown session"},
		{name: "other backend route", url: p.url + "/projects/proj-a/agentic-sessions/s-backend/agui/events", method: "GET", code: 404, errMsg: "unknown endpoint"},
		{name: "GET", url: backendRunPath(p, "proj-a", "s-backend"), method: "GET", code: 405, errMsg: "method not allowed"},
		{name: "not JSON", url: backendRunPath(p, "proj-a", "s-backend"), body: "hello", code: 400},
		{name: "run id not a string", url: backendRunPath(p, "proj-a", "s-backend"), body: `{"runId":7,"messages":[]}`, code: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			if tc.method == "GET" {
				resp = get(t, tc.url)
			} else {
				resp = platformRun(t, tc.url, tc.body)
			}
			if resp.StatusCode != tc.code {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.code)
			}
			if tc.code == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("Retry-After %q, want 1: the platform's runner retries its first prompt", resp.Header.Get("Retry-After"))
			}
			got := jsonError(t, resp)
			if tc.errMsg != "" && got != tc.errMsg {
				t.Fatalf("error %q, want %q", got, tc.errMsg)
			}
			if tc.code == 400 && !strings.HasPrefix(got, "invalid input: ") {
				t.Fatalf("error %q, want the backend's invalid input", got)
			}
		})
	}
	if s := other.stats(t); s["runs_started"] != 0 {
		t.Fatalf("the other project's runner got runs: %v", s)
	}
	if s := r.stats(t); s["runs_started"] != 2 {
		t.Fatalf("runner stats %v, want the 2 accepted runs only", s)
	}
}

// TestBackendRunRunnerAnswers: a runner that does not accept the run has
// its answer passed through as on the run route (the platform runner's
// 422 for an input without messages, its 503 before its adapter is up),
// and a runner that cannot be reached is the proxy's JSON 502; no run is
// drained then. Authentication is the other routes': with AGUI_AUTH=token
// the runner's BOT_TOKEN must be one of the proxy's tokens.
func TestBackendRunRunnerAnswers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.registerServerIn(t, "s-422", "proj", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required"}]}`)
	})
	e.registerServerIn(t, "s-503", "proj", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"detail":"Adapter not initialized"}`)
	})
	dead := startRunner(t, "s-dead")
	e.inProject(t, dead, "s-dead", "proj")
	dead.stop(t)
	ok := startRunner(t, "s-auth")
	e.inProject(t, ok, "s-auth", "proj")

	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(goodToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.proxyCfg()
	cfg.Auth, cfg.TokensFile = auth.ModeToken, tokens
	p := startProxy(t, cfg)
	bearer := "Bearer " + goodToken

	for _, tc := range []struct {
		name, id, token string
		code            int
		body            string // the runner's answer, passed through
		errMsg          string // the proxy's own
	}{
		{name: "runner 422", id: "s-422", token: bearer, code: 422, body: `{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required"}]}`},
		{name: "runner 503", id: "s-503", token: bearer, code: 503, body: `{"detail":"Adapter not initialized"}`},
		{name: "runner gone", id: "s-dead", token: bearer, code: 502, errMsg: "runner unreachable"},
		{name: "no token", id: "s-auth", code: 401, errMsg: "unauthorized"},
		{name: "wrong token", id: "s-auth", token: "Bearer not-a-token-of-the-proxy", code: 401, errMsg: "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.token != "" {
				h = []string{"Authorization", tc.token}
			}
			resp := platformRun(t, backendRunPath(p, "proj", tc.id), runInput("x"), h...)
			if resp.StatusCode != tc.code {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.code)
			}
			if tc.errMsg != "" {
				if got := jsonError(t, resp); got != tc.errMsg {
					t.Fatalf("error %q, want %q", got, tc.errMsg)
				}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != tc.body {
				t.Fatalf("body %q (%v), want the runner's %q", b, err, tc.body)
			}
		})
	}
	if s := ok.stats(t); s["runs_started"] != 0 {
		t.Fatalf("unauthenticated runs reached the runner: %v", s)
	}
	runAccepted(t, platformRun(t, backendRunPath(p, "proj", "s-auth"), runInput("x"), "Authorization", bearer))
	testenv.Eventually(t, 10*time.Second, func() error {
		if s := ok.stats(t); s["runs_finished"] != 1 {
			return errorf("runner stats %v, want 1 run finished", s)
		}
		return nil
	})
}

// TestBackendRunDrainIsBounded: a run the proxy drains in the background
// ends (the runner sees it cancelled, not finished) when DETACHED_RUN_TIMEOUT
// is over, when the session's endpoint leaves the routing table, and when
// the proxy stops, whose Run returns only once the drain has ended (the
// package's TestMain finds any goroutine left behind).
func TestBackendRunDrainIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// 2000 words at 50 ms: a run of 100 s, which nothing here waits for.
	long := runInput(words(2000))
	cancelled := func(t *testing.T, r *runner) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() error {
			if s := r.stats(t); s["runs_cancelled"] != 1 || s["runs_finished"] != 0 || s["active_runs"] != 0 {
				return errorf("runner stats %v, want 1 run cancelled", s)
			}
			return nil
		})
	}

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		r := startRunner(t, "s-drain-timeout", "DEMO_WORD_DELAY=50ms")
		e.inProject(t, r, "s-drain-timeout", "proj")
		cfg := e.proxyCfg()
		cfg.DetachedRunTimeout = 3 * time.Second
		p, logs := startProxyLogged(t, cfg)
		runAccepted(t, platformRun(t, backendRunPath(p, "proj", "s-drain-timeout"), long))
		cancelled(t, r)
		testenv.Eventually(t, 10*time.Second, func() error {
			if !strings.Contains(logs.String(), "detached run timed out") {
				return errorf("no timeout in the proxy's log")
			}
			return nil
		})
	})

	t.Run("endpoint removed", func(t *testing.T) {
		t.Parallel()
		r := startRunner(t, "s-drain-gone", "DEMO_WORD_DELAY=50ms")
		e.inProject(t, r, "s-drain-gone", "proj")
		p := startProxy(t, e.proxyCfg())
		runAccepted(t, platformRun(t, backendRunPath(p, "proj", "s-drain-gone"), long))
		e.release(t, "s-drain-gone")
		cancelled(t, r)
	})

	t.Run("proxy stops", func(t *testing.T) {
		t.Parallel()
		r := startRunner(t, "s-drain-stop", "DEMO_WORD_DELAY=50ms")
		e.inProject(t, r, "s-drain-stop", "proj")
		p, logs := startProxyLogged(t, e.proxyCfg())
		runAccepted(t, platformRun(t, backendRunPath(p, "proj", "s-drain-stop"), long))
		testenv.Eventually(t, 10*time.Second, func() error {
			if s := r.stats(t); s["active_runs"] != 1 {
				return errorf("runner stats %v, want the run going", s)
			}
			return nil
		})
		if err := p.stop(); err != nil {
			t.Fatalf("proxy Run: %v", err)
		}
		// Run has returned: the drain ended before it did (cancelled
		// as the proxy stopped; the routing table, stopping with it, may
		// have removed the endpoint first).
		if !strings.Contains(logs.String(), "detached run ended by the proxy") {
			t.Fatalf("the drain had not ended when Run returned; log:\n%s", logs.String())
		}
		cancelled(t, r)
	})
}

// TestEventsThreadTap: GET /sessions/{id}/agui/events/{thread_id} is the
// platform runner's live tap, GET /events/{thread_id}, relayed as the
// events route relays: the runner's bytes as they are, the stream headers,
// the client's credentials and platform identity never passed on, the
// proxy's RUN_ERROR when the runner's endpoint goes; a thread id that is
// not one plain path segment is a 400 that reaches no runner. Before,
// the path was 404 "unknown endpoint".
func TestEventsThreadTap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const tap = "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"thread-7\",\"runId\":\"r1\"}\n\n" +
		": keepalive\n\n" +
		"data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"thread-7\",\"runId\":\"r1\"}\n\n"
	seen := make(chan *http.Request, 16) // every request the runner got
	e.registerServerIn(t, "s-tap", "proj", func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Clone(r.Context())
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		switch r.URL.Path {
		case "/events/thread-7":
			_, _ = io.WriteString(w, tap)
		case "/events/thread-open":
			_, _ = io.WriteString(w, "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"thread-open\",\"runId\":\"r2\"}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	p := startProxy(t, e.proxyCfg())
	metrics := "http://" + p.app.MetricsAddr() + "/metrics"

	resp := get(t, p.session("s-tap", "/agui/events/thread-7"), "Accept", "*/*", "Authorization", "Bearer secret",
		"Cookie", "session=x", "X-Current-User-Id", "mallory", "X-Caller-Token", "Bearer stolen")
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(b) != tap {
		t.Fatalf("status %d, body %q (%v), want the runner's tap", resp.StatusCode, b, err)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	got := <-seen
	if got.URL.Path != "/events/thread-7" || got.Method != http.MethodGet {
		t.Fatalf("runner got %s %s, want GET /events/thread-7", got.Method, got.URL.Path)
	}
	if a := got.Header.Get("Accept"); a != "text/event-stream" {
		t.Errorf("runner's Accept %q, want text/event-stream", a)
	}
	for _, k := range []string{"Authorization", "Cookie", "X-Current-User-Id", "X-Caller-Token"} {
		if v := got.Header.Get(k); v != "" {
			t.Errorf("runner got %s: %q", k, v)
		}
	}

	for _, tc := range []struct {
		name, path string
		code       int
		errMsg     string
	}{
		{name: "escaped dotdot", path: "/agui/events/%2E%2E", code: 400, errMsg: "invalid thread id"},
		{name: "escaped slash", path: "/agui/events/a%2F..%2Fhealth", code: 400, errMsg: "invalid thread id"},
		{name: "two segments", path: "/agui/events/a/b", code: 400, errMsg: "invalid thread id"},
		{name: "empty", path: "/agui/events/", code: 400, errMsg: "invalid thread id"},
		{name: "semicolon", path: "/agui/events/a;b", code: 400, errMsg: "invalid thread id"},
		{name: "unknown session", path: "", code: 404, errMsg: "unknown session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := p.session("s-tap", tc.path)
			if tc.path == "" {
				u = p.session("s-none", "/agui/events/thread-7")
			}
			resp := get(t, u)
			if resp.StatusCode != tc.code {
				resp.Body.Close()
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if got := jsonError(t, resp); got != tc.errMsg {
				t.Fatalf("error %q, want %q", got, tc.errMsg)
			}
		})
	}
	resp = platformRun(t, p.session("s-tap", "/agui/events/thread-7"), "{}")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST of the tap: status %d, want 405", resp.StatusCode)
	}
	resp.Body.Close()
	select {
	case r := <-seen:
		t.Fatalf("a refused request reached the runner: %s %s", r.Method, r.URL.Path)
	default:
	}
	if v, _ := metricValue(t, metrics, "agui_proxy_requests_total", `route="events_thread"`, `code="200"`); v != 1 {
		t.Errorf("events_thread 200 requests %v, want 1", v)
	}
	if v, _ := metricValue(t, metrics, "agui_proxy_streamed_bytes_total", `route="events_thread"`); v != float64(len(tap)) {
		t.Errorf("events_thread bytes %v, want %d", v, len(tap))
	}

	// A tap open when the session's endpoint goes ends with the proxy's
	// RUN_ERROR, as the events route's streams do.
	open := get(t, p.session("s-tap", "/agui/events/thread-open"))
	defer open.Body.Close()
	<-seen
	first := make([]byte, 1)
	if _, err := io.ReadFull(open.Body, first); err != nil {
		t.Fatal(err)
	}
	end := streamEnd(io.MultiReader(strings.NewReader(string(first)), open.Body))
	e.release(t, "s-tap")
	wantRunError(t, end, 10*time.Second, "RUNNER_GONE", "the session's runner stopped or moved; the run did not finish",
		"the tap stayed open after its endpoint was removed")
}

// TestPlatformSideRoutes: the platform runner's GET /capabilities and POST
// /feedback, which the platform's UI reaches through its backend as
// agui/capabilities and agui/feedback, pass through under
// /sessions/{id}/agui/ as /mcp/status does: the runner's answer as it is.
// Before, both were 404 "unknown endpoint".
func TestPlatformSideRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const caps = `{"framework":"claude-agent-sdk","agent_features":["agentic_chat"],"platform_features":["repos"],"file_system":true,"mcp":true}`
	const raw = `{"type":"RAW","event":{"name":"ambient:feedback","metaType":"thumbs_up","payload":{"messageId":"m1"},"recorded":false}}`
	const meta = `{"type":"META","metaType":"thumbs_up","payload":{"messageId":"m1"}}`
	seen := make(chan string, 4) // method, path and body of each runner request
	e.registerServerIn(t, "s-side", "proj", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- r.Method + " " + r.URL.Path + " " + string(b)
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "GET /capabilities":
			_, _ = io.WriteString(w, caps)
		case "POST /feedback":
			_, _ = io.WriteString(w, raw)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	p := startProxy(t, e.proxyCfg())

	if got := bodyOf(t, p.session("s-side", "/agui/capabilities")); got != caps {
		t.Fatalf("capabilities %q, want the runner's %q", got, caps)
	}
	if got := <-seen; got != "GET /capabilities " {
		t.Fatalf("runner got %q", got)
	}
	resp := platformRun(t, p.session("s-side", "/agui/feedback"), meta)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(b) != raw {
		t.Fatalf("feedback: status %d body %q (%v), want the runner's %q", resp.StatusCode, b, err, raw)
	}
	if got := <-seen; got != "POST /feedback "+meta {
		t.Fatalf("runner got %q", got)
	}
	for _, tc := range []struct{ method, path string }{{"POST", "/agui/capabilities"}, {"GET", "/agui/feedback"}} {
		var resp *http.Response
		if tc.method == "GET" {
			resp = get(t, p.session("s-side", tc.path))
		} else {
			resp = platformRun(t, p.session("s-side", tc.path), "{}")
		}
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d, want 405", tc.method, tc.path, resp.StatusCode)
		}
		resp.Body.Close()
	}
	select {
	case got := <-seen:
		t.Fatalf("a refused request reached the runner: %q", got)
	default:
	}
}
