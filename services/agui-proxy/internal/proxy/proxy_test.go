package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// seen is what the fake runner received.
type seen struct {
	Method, Path, Query, Authorization, AcceptEncoding, Accept, Body string
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	got := make(chan seen, 1) // one request per case
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"),
			r.Header.Get("Accept-Encoding"), r.Header.Get("Accept"), string(b)}
		w.Header().Set("Content-Type", "application/vnd.test")
		w.Header().Set("X-Runner", "yes")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "ok:"+r.URL.Path)
	}))
	t.Cleanup(runner.Close)
	// A registered but dead runner: every connection is closed at once.
	// The port stays held for the test (a closed one could be taken by a
	// parallel test's server, which then answered in the runner's place).
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Closing the listener ends the accept loop, which the test owns.
	t.Cleanup(func() { _ = dead.Close() })
	go func() {
		for {
			c, err := dead.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	deadURL := "http://" + dead.Addr().String()

	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	tab.set("dead", endpointOf(t, "dead", deadURL))
	_, srv := startProxy(t, Config{MaxBodyBytes: 64}, tab, nil)

	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		code     int
		errMsg   string // JSON error expected when set
		upstream string // runner path expected when set
		method2  string // runner method when it differs
	}{
		{name: "events", method: "GET", path: "/sessions/s1/agui/events?x=1", code: 202, upstream: "/"},
		{name: "run", method: "POST", path: "/sessions/s1/agui/run", body: `{"threadId":"t"}`, code: 202, upstream: "/"},
		{name: "interrupt", method: "POST", path: "/sessions/s1/agui/interrupt", body: `{}`, code: 202, upstream: "/interrupt"},
		{name: "health", method: "GET", path: "/sessions/s1/health", code: 202, upstream: "/health"},
		{name: "mcp", method: "GET", path: "/sessions/s1/mcp/status", code: 202, upstream: "/mcp/status"},
		{name: "repos", method: "GET", path: "/sessions/s1/repos/status", code: 202, upstream: "/repos/status"},
		{name: "unknown session", method: "GET", path: "/sessions/nope/health", code: 404, errMsg: "unknown session"},
		{name: "invalid session", method: "GET", path: "/sessions/a%2F..%2Fb/health", code: 404, errMsg: "unknown session"},
		{name: "unknown endpoint", method: "GET", path: "/sessions/s1/admin", code: 404, errMsg: "unknown endpoint"},
		{name: "traversal", method: "GET", path: "/sessions/s1/agui/../health", code: 404, errMsg: "unknown endpoint"},
		{name: "wrong method", method: "GET", path: "/sessions/s1/agui/run", code: 405, errMsg: "method not allowed"},
		{name: "dead runner", method: "GET", path: "/sessions/dead/health", code: 502, errMsg: "runner unreachable"},
		{name: "dead runner stream", method: "POST", path: "/sessions/dead/agui/run", body: "{}", code: 502, errMsg: "runner unreachable"},
		{name: "too large", method: "POST", path: "/sessions/s1/agui/run", body: strings.Repeat("x", 65), code: 413,
			errMsg: "request body larger than 64 bytes"},
		{name: "limit exactly", method: "POST", path: "/sessions/s1/agui/run", body: strings.Repeat("x", 64), code: 202, upstream: "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer secret")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			if tc.errMsg != "" {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type = %q, want application/json", ct)
				}
				var e errorBody
				if err := json.Unmarshal(body, &e); err != nil || e.Error != tc.errMsg {
					t.Fatalf("body = %s (%v), want error %q", body, err, tc.errMsg)
				}
				select {
				case s := <-got:
					t.Fatalf("runner was called: %+v", s)
				default:
				}
				return
			}
			s := within(t, 5*time.Second, got, "runner request")
			if s.Path != tc.upstream || s.Method != tc.method || s.Body != tc.body {
				t.Fatalf("runner got %+v, want %s %s body %q", s, tc.method, tc.upstream, tc.body)
			}
			if s.Authorization != "" || s.AcceptEncoding != "" {
				t.Fatalf("credentials or Accept-Encoding forwarded: %+v", s)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.test" || resp.Header.Get("X-Runner") != "yes" {
				t.Fatalf("response headers not passed through: %v", resp.Header)
			}
			if string(body) != "ok:"+tc.upstream {
				t.Fatalf("body = %q", body)
			}
		})
	}
}

// sseRunner streams frames fed through its channel, as a runner does.
func sseRunner(t *testing.T, frames <-chan string, cancelled chan<- struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		for {
			select {
			case <-r.Context().Done():
				if cancelled != nil {
					cancelled <- struct{}{}
				}
				return
			case f, ok := <-frames:
				if !ok {
					return
				}
				if _, err := io.WriteString(w, f); err != nil {
					return
				}
				_ = rc.Flush()
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestStreamIsNotBuffered sends each frame only after the client has read the
// previous one through the proxy: any buffering would deadlock (and time out).
// With keep-alives on (the default) and off: the chunks take the same path
// on the handler's goroutine either way.
func TestStreamIsNotBuffered(t *testing.T) {
	t.Parallel()
	for _, keepAlive := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("keepalive=%s", keepAlive), func(t *testing.T) {
			t.Parallel()
			frames := make(chan string)
			runner := sseRunner(t, frames, nil)
			tab := newTable()
			tab.set("s1", endpointOf(t, "s1", runner.URL))
			_, srv := startProxy(t, Config{SSEKeepAlive: keepAlive}, tab, nil)

			resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("Content-Type = %q", ct)
			}
			if resp.Header.Get("X-Accel-Buffering") != "no" || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("missing anti-buffering headers: %v", resp.Header)
			}
			fr := newFrameReader(resp.Body)
			// CRLF and odd framing must pass byte for byte.
			want := []string{"data: {\"type\":\"RUN_STARTED\"}\n\n", "event: x\r\ndata: y\r\n\r\n", "data: 3\n\n", runFinished}
			for i, f := range want {
				frames <- f
				got := make(chan string, 1)
				go func() { // exits when a frame or error arrives; the body closes at test end
					s, _ := fr.next()
					got <- s
				}()
				s := within(t, 5*time.Second, got, fmt.Sprintf("frame %d", i))
				if s != f {
					t.Fatalf("frame %d = %q, want %q", i, s, f)
				}
			}
			close(frames)
			rest, err := io.ReadAll(resp.Body)
			if err != nil || len(rest) != 0 {
				t.Fatalf("end of stream: %q, %v", rest, err)
			}
		})
	}
}

// TestStreamOutlivesServerTimeouts runs a stream three times longer than the
// server's ReadTimeout and WriteTimeout: streaming routes clear both.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(3 * timeout)
		tick := time.NewTicker(timeout / 4) // the "slow runner"
		defer tick.Stop()
		for i := 0; time.Now().Before(deadline); i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			_ = rc.Flush()
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, runFinished) // a finished run: nothing added
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{}, tab, func(s *http.Server) {
		s.ReadTimeout = timeout
		s.WriteTimeout = timeout
		s.ReadHeaderTimeout = timeout
	})
	for _, tc := range []struct{ method, path string }{
		{"POST", "/sessions/s1/agui/run"},
		{"GET", "/sessions/s1/agui/events"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader("{}"))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: stream cut after %v: %v", tc.path, time.Since(start), err)
		}
		if !strings.HasSuffix(string(b), runFinished) || time.Since(start) < 3*timeout {
			t.Fatalf("%s: stream ended early after %v: %q", tc.path, time.Since(start), b)
		}
	}
}

func TestClientDisconnectCancelsRunner(t *testing.T) {
	t.Parallel()
	frames := make(chan string)
	cancelled := make(chan struct{}, 1)
	runner := sseRunner(t, frames, cancelled)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	p, srv := startProxy(t, Config{SSEKeepAlive: time.Hour}, tab, nil)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/sessions/s1/agui/run", strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	frames <- "data: 1\n\n"
	if _, err := newFrameReader(resp.Body).next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	within(t, 5*time.Second, cancelled, "runner to see cancellation")
	waitFor(t, func() bool { return p.ActiveStreams() == 0 }, "stream untracked")
}

func TestRemovedEndpointEndsStream(t *testing.T) {
	t.Parallel()
	for _, keepAlive := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			t.Parallel()
			frames := make(chan string)
			cancelled := make(chan struct{}, 1)
			runner := sseRunner(t, frames, cancelled)
			tab := newTable()
			tab.set("s1", endpointOf(t, "s1", runner.URL))
			_, srv := startProxy(t, Config{SSEKeepAlive: keepAlive, SweepInterval: 10 * time.Millisecond}, tab, nil)

			resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			frames <- "data: 1\n\n"
			fr := newFrameReader(resp.Body)
			if _, err := fr.next(); err != nil {
				t.Fatal(err)
			}
			tab.remove("s1")
			// The run did not finish: a RUN_ERROR says so, then a clean
			// end (EOF of a properly terminated chunked body).
			if err := within(t, 5*time.Second, readRest(fr), "stream end"); err != nil {
				t.Fatal(err)
			}
			within(t, 5*time.Second, cancelled, "runner to see cancellation")
			// New requests get 404 at once.
			r2, err := http.Get(srv.URL + "/sessions/s1/health")
			if err != nil {
				t.Fatal(err)
			}
			r2.Body.Close()
			if r2.StatusCode != http.StatusNotFound {
				t.Fatalf("after removal: %d, want 404", r2.StatusCode)
			}
		})
	}
}

func TestReplacedEndpointEndsStream(t *testing.T) {
	t.Parallel()
	frames := make(chan string)
	runner := sseRunner(t, frames, nil)
	tab := newTable()
	ep := endpointOf(t, "s1", runner.URL)
	tab.set("s1", ep)
	_, srv := startProxy(t, Config{SweepInterval: 10 * time.Millisecond}, tab, nil)
	resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Owner and state changes keep the stream; a new process ends it.
	ep.Owner, ep.State = "other-replica", "stopping"
	tab.set("s1", ep)
	frames <- "data: still\n\n"
	fr := newFrameReader(resp.Body)
	if f, err := fr.next(); err != nil || f != "data: still\n\n" {
		t.Fatalf("frame after owner change = %q, %v", f, err)
	}
	ep.PID++
	tab.set("s1", ep)
	if err := within(t, 5*time.Second, readRest(fr), "stream end"); err != nil {
		t.Fatal(err)
	}
}

// readRest reads the rest of a stream the proxy ended because its runner
// endpoint left: it must be the RUN_ERROR frame (RUNNER_GONE), then a
// clean end. The result comes once, when the stream ended.
func readRest(fr *frameReader) <-chan error {
	end := make(chan error, 1)
	go func() { // exits when the stream ends
		want := string(runErrorFrames[endRunnerGone][encodingSSE])
		if f, err := fr.next(); err != nil || f != want {
			end <- fmt.Errorf("frame after the removal %q, %w; want %q", f, err, want)
			return
		}
		if f, err := fr.next(); f != "" || !errors.Is(err, io.EOF) {
			end <- fmt.Errorf("after the RUN_ERROR %q, %w; want a clean end", f, err)
			return
		}
		end <- nil
	}()
	return end
}

func TestKeepAliveOnlyBetweenFrames(t *testing.T) {
	t.Parallel()
	const keepAlive = 20 * time.Millisecond
	frames := make(chan string)
	runner := sseRunner(t, frames, nil)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{SSEKeepAlive: keepAlive}, tab, nil)
	resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fr := newFrameReader(resp.Body)
	// Idle before any event: pings are allowed.
	if f, err := fr.next(); err != nil || f != ": ping\n\n" {
		t.Fatalf("first = %q, %v, want ping", f, err)
	}
	// Half a frame, then silence for many keep-alive periods: no ping inside.
	frames <- "data: half"
	idle := time.NewTimer(10 * keepAlive)
	<-idle.C // the runner stays silent mid-frame for this long (the condition under test)
	frames <- "-frame\n\n"
	f, err := fr.next()
	for err == nil && f == ": ping\n\n" {
		f, err = fr.next() // pings queued before the half frame
	}
	if err != nil || f != "data: half-frame\n\n" {
		t.Fatalf("frame = %q, %v: keep-alive interleaved inside a frame", f, err)
	}
	if f, err := fr.next(); err != nil || f != ": ping\n\n" {
		t.Fatalf("after frame = %q, %v, want ping", f, err)
	}
	close(frames)
}

func TestFrameTail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		chunks []string
		want   bool
	}{
		{name: "empty", want: true},
		{name: "lf frame", chunks: []string{"data: x\n\n"}, want: true},
		{name: "crlf frame", chunks: []string{"data: x\r\n\r\n"}, want: true},
		{name: "cr frame", chunks: []string{"data: x\r\r"}, want: true},
		{name: "split lf", chunks: []string{"data: x\n", "\n"}, want: true},
		{name: "split crlf", chunks: []string{"data: x\r\n\r", "\n"}, want: true},
		{name: "byte by byte", chunks: []string{"d", "\r", "\n", "\r", "\n"}, want: true},
		{name: "mid line", chunks: []string{"data: x"}},
		{name: "one newline", chunks: []string{"data: x\n"}},
		// A blank line in mixed line ends (SSE allows "\r\n", "\n" and
		// "\r"): before, these waited for "\r\n\r\n" and a stream the
		// proxy ended there was aborted instead of ended cleanly.
		{name: "crlf then cr", chunks: []string{"data: x\r\n\r"}, want: true},
		{name: "lf then crlf", chunks: []string{"data: x\n\r\n"}, want: true},
		{name: "crlf then lf", chunks: []string{"data: x\r\n\n"}, want: true},
		{name: "cr then crlf", chunks: []string{"data: x\r", "\r\n"}, want: true},
		{name: "lf then cr", chunks: []string{"data: x\n", "\r"}, want: true},
		{name: "crlf one line", chunks: []string{"data: x\r\n"}},
		{name: "cr one line", chunks: []string{"data: x\r"}},
		{name: "crlf split", chunks: []string{"\r", "\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ft frameTail
			for _, c := range tc.chunks {
				ft.add([]byte(c))
			}
			if got := ft.atBoundary(); got != tc.want {
				t.Fatalf("atBoundary = %v, want %v", got, tc.want)
			}
		})
	}
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestNotSyncedIs503: before the routing table holds a full snapshot, a
// session missing from it may exist; the proxy says 503, not 404.
func TestNotSyncedIs503(t *testing.T) {
	t.Parallel()
	tab := newTable()
	synced := false
	var mu sync.Mutex
	_, srv := startProxy(t, Config{Synced: func() bool { mu.Lock(); defer mu.Unlock(); return synced }}, tab, nil)
	for _, tc := range []struct {
		synced bool
		code   int
		msg    string
	}{{false, http.StatusServiceUnavailable, "routing table not synced"}, {true, http.StatusNotFound, "unknown session"}} {
		mu.Lock()
		synced = tc.synced
		mu.Unlock()
		resp, err := http.Get(srv.URL + "/sessions/s1/health")
		if err != nil {
			t.Fatal(err)
		}
		var e errorBody
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.code || e.Error != tc.msg {
			t.Fatalf("synced=%v: %d %q (%v), want %d %q", tc.synced, resp.StatusCode, e.Error, err, tc.code, tc.msg)
		}
	}
}

// unsure is a Resolver that cannot tell: every Resolve fails with err.
type unsure struct{ err error }

func (u unsure) Lookup(string) (registry.Endpoint, bool) { return registry.Endpoint{}, false }

func (u unsure) Resolve(context.Context, string) (registry.Endpoint, error) {
	return registry.Endpoint{}, u.err
}

// TestRouteUnknownIs503: a Resolver that cannot tell whether a session has
// a route (a stale table, a read that failed) gets 503 with Retry-After: 1
// on every session route, the backend run path included, never 404, which
// tells a client that the session does not exist.
func TestRouteUnknownIs503(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err error
		msg string
	}{
		{fmt.Errorf("%w: not confirmed current for 11s", registry.ErrStale), "routing table stale"},
		{fmt.Errorf("%w: read route sessions.s1: nats: timeout", registry.ErrRouteUnknown), "session route unknown"},
	} {
		_, srv := startProxy(t, Config{}, unsure{tc.err}, nil)
		for _, path := range []string{"/sessions/s1/health", "/projects/p/agentic-sessions/s1/agui/run"} {
			method := http.MethodGet
			if strings.HasSuffix(path, "/run") {
				method = http.MethodPost
			}
			req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e errorBody
			err = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusServiceUnavailable || e.Error != tc.msg || resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("%s %s with %v: %d %q Retry-After %q (%v); want 503 %q, Retry-After 1",
					method, path, tc.err, resp.StatusCode, e.Error, resp.Header.Get("Retry-After"), err, tc.msg)
			}
		}
	}
}

// runFinished is a RUN_FINISHED frame: a run's stream that ends with it is
// relayed as it is (one that ends before it gets the proxy's RUN_ERROR).
const runFinished = "data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n"
