package app_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestErrors is acceptance items 4 and 8: 404 for unknown sessions and
// endpoints, 502 for a registered runner that is gone, 413 for oversize
// bodies, all as JSON; side endpoints reach the runner.
func TestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-ok")
	e.register(t, r.endpoint(t, "s-ok"))
	dead := startRunner(t, "s-dead")
	e.register(t, dead.endpoint(t, "s-dead"))
	dead.stop(t) // registered, but the process is gone
	cfg := e.proxyCfg()
	cfg.MaxBodyBytes = 1024
	p := startProxy(t, cfg)

	tests := []struct {
		name   string
		method string
		path   string
		body   string
		code   int
		errMsg string
		want   string // substring of a runner answer
	}{
		{name: "health", method: "GET", path: "/sessions/s-ok/health", code: 200, want: `"session_id":"s-ok"`},
		{name: "mcp status", method: "GET", path: "/sessions/s-ok/mcp/status", code: 200, want: `"servers"`},
		{name: "repos status", method: "GET", path: "/sessions/s-ok/repos/status", code: 200, want: `"repos"`},
		{name: "unknown session", method: "GET", path: "/sessions/s-none/health", code: 404, errMsg: "unknown session"},
		{name: "unknown endpoint", method: "GET", path: "/sessions/s-ok/debug/stats", code: 404, errMsg: "unknown endpoint"},
		{name: "outside sessions", method: "GET", path: "/admin", code: 404, errMsg: "not found"},
		{name: "path trick", method: "GET", path: "/sessions/s-ok/agui/..%2F..%2Fdebug/stats", code: 404, errMsg: "unknown endpoint"},
		{name: "dead runner", method: "GET", path: "/sessions/s-dead/health", code: 502, errMsg: "runner unreachable"},
		{name: "dead runner run", method: "POST", path: "/sessions/s-dead/agui/run", body: runInput("hi"), code: 502, errMsg: "runner unreachable"},
		{name: "oversize body", method: "POST", path: "/sessions/s-ok/agui/run", body: runInput(strings.Repeat("x", 2048)), code: 413,
			errMsg: "request body larger than 1024 bytes"},
		{name: "oversize interrupt", method: "POST", path: "/sessions/s-ok/agui/interrupt", body: strings.Repeat(" ", 1025), code: 413,
			errMsg: "request body larger than 1024 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, p.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
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
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), tc.want) {
				t.Fatalf("body %s, want %s", b, tc.want)
			}
		})
	}
	// The oversize bodies never reached the runner.
	if s := r.stats(t); s["runs_started"] != 0 {
		t.Fatalf("runner stats %v", s)
	}
}

// TestReplicasFollowRegistry is acceptance item 5: two proxy replicas route
// a session identically; a runner registered after they started is routable
// within a second; a removed one gives 404 at once, and a stream open
// through it ends cleanly, its last event the proxy's RUN_ERROR
// (RUNNER_GONE): the run did not finish, and a client must not take it for
// finished.
func TestReplicasFollowRegistry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p1 := startProxy(t, e.proxyCfg())
	p2 := startProxy(t, e.proxyCfg())
	r := startRunner(t, "s-late", "DEMO_WORD_DELAY=100ms")

	for _, p := range []*proxyHandle{p1, p2} {
		if code := statusOf(t, p.session("s-late", "/health")); code != http.StatusNotFound {
			t.Fatalf("before registration: %d", code)
		}
	}
	registered := time.Now()
	e.register(t, r.endpoint(t, "s-late"))
	for i, p := range []*proxyHandle{p1, p2} {
		testenv.Eventually(t, 10*time.Second, func() error {
			if code := statusOf(t, p.session("s-late", "/health")); code != http.StatusOK {
				return errorf("replica %d: status %d", i+1, code)
			}
			return nil
		})
	}
	t.Logf("both replicas routable %v after registration", time.Since(registered))
	b1, b2 := bodyOf(t, p1.session("s-late", "/health")), bodyOf(t, p2.session("s-late", "/health"))
	if b1 != b2 || !strings.Contains(b1, `"session_id":"s-late"`) {
		t.Fatalf("replicas answer differently: %q vs %q", b1, b2)
	}

	// A stream through replica 1, then the endpoint is removed.
	resp := postRun(context.Background(), t, p1.session("s-late", "/agui/run"), runInput(words(100)))
	defer resp.Body.Close()
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	e.release(t, "s-late")
	for i, p := range []*proxyHandle{p1, p2} {
		testenv.Eventually(t, 10*time.Second, func() error {
			if code := statusOf(t, p.session("s-late", "/health")); code != http.StatusNotFound {
				return errorf("replica %d after removal: status %d", i+1, code)
			}
			return nil
		})
	}
	t.Logf("both replicas answer 404 %v after removal", time.Since(removed))
	wantRunError(t, streamEnd(resp.Body), 5*time.Second, "RUNNER_GONE", "the session's runner stopped or moved; the run did not finish", "stream to a removed endpoint still open")
	testenv.Eventually(t, 5*time.Second, func() error {
		if s := r.stats(t); s["runs_cancelled"] != 1 {
			return errorf("runner stats %v", s)
		}
		return nil
	})
}

// TestOnlyRegisteredEndpointsDialed: a record without an address is not
// routable, and the proxy never dials anything but the record's address.
func TestOnlyRegisteredEndpointsDialed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := startProxy(t, e.proxyCfg())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := registry.Claim(ctx, e.kv, registry.Endpoint{SessionID: "s-claimed", Owner: "m", State: registry.StateClaimed}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() { // exits when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	host := ln.Addr().String()
	for _, path := range []string{"/sessions/s-claimed/health", "/sessions/" + host + "/health", "/sessions/x/health?host=" + host} {
		resp := get(t, p.url+path)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		resp.Body.Close()
	}
	select {
	case <-accepted:
		t.Fatal("proxy dialed an unregistered address")
	default:
	}
}

func statusOf(t testing.TB, url string) int {
	t.Helper()
	resp := get(t, url)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func bodyOf(t testing.TB, url string) string {
	t.Helper()
	resp := get(t, url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return string(b)
}
