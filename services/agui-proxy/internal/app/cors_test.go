package app_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// TestCORS is acceptance item 7.
func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-cors")
	e.register(t, r.endpoint(t, "s-cors"))
	cfg := e.proxyCfg()
	cfg.CORSOrigins = []string{"https://app.example", "http://localhost:3000"}
	p, pLog := startProxyLogged(t, cfg)
	anyCfg := e.proxyCfg()
	anyCfg.CORSOrigins = []string{"*"}
	pAny, pAnyLog := startProxyLogged(t, anyCfg)
	// "*" is allowed, and said at start: any site may then script the
	// proxy from its visitors' browsers. (Both logged before Ready.)
	const warning = "cors allows any origin"
	if !strings.Contains(pAnyLog.String(), warning) || strings.Contains(pLog.String(), warning) {
		t.Fatalf("warning %q: with \"*\" logged %v, with listed origins logged %v; want true, false",
			warning, strings.Contains(pAnyLog.String(), warning), strings.Contains(pLog.String(), warning))
	}

	tests := []struct {
		name        string
		p           *proxyHandle
		method      string
		origin      string
		reqMethod   string // Access-Control-Request-Method (preflight)
		reqHeaders  string
		code        int
		allowOrigin string
	}{
		{name: "preflight allowed", p: p, method: "OPTIONS", origin: "https://app.example", reqMethod: "POST",
			reqHeaders: "content-type, authorization", code: 204, allowOrigin: "https://app.example"},
		{name: "preflight second origin", p: p, method: "OPTIONS", origin: "http://localhost:3000", reqMethod: "GET", code: 204,
			allowOrigin: "http://localhost:3000"},
		{name: "preflight disallowed origin", p: p, method: "OPTIONS", origin: "https://evil.example", reqMethod: "POST", code: 204},
		{name: "preflight disallowed method", p: p, method: "OPTIONS", origin: "https://app.example", reqMethod: "DELETE", code: 204},
		{name: "preflight disallowed header", p: p, method: "OPTIONS", origin: "https://app.example", reqMethod: "POST",
			reqHeaders: "x-evil", code: 204},
		{name: "plain options", p: p, method: "OPTIONS", code: 204},
		{name: "actual allowed", p: p, method: "GET", origin: "https://app.example", code: 200, allowOrigin: "https://app.example"},
		{name: "actual disallowed", p: p, method: "GET", origin: "https://evil.example", code: 200},
		{name: "star preflight", p: pAny, method: "OPTIONS", origin: "https://anything.example", reqMethod: "POST", code: 204, allowOrigin: "*"},
		{name: "star actual", p: pAny, method: "GET", origin: "https://anything.example", code: 200, allowOrigin: "*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.p.session("s-cors", "/health"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.reqMethod != "" {
				req.Header.Set("Access-Control-Request-Method", tc.reqMethod)
			}
			if tc.reqHeaders != "" {
				req.Header.Set("Access-Control-Request-Headers", tc.reqHeaders)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			h := resp.Header
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatalf("credentials allowed: %v", h)
			}
			if tc.allowOrigin != "" && tc.reqMethod != "" {
				if m := h.Get("Access-Control-Allow-Methods"); m != tc.reqMethod {
					t.Fatalf("Access-Control-Allow-Methods %q", m)
				}
				if tc.reqHeaders != "" && !strings.EqualFold(h.Get("Access-Control-Allow-Headers"), tc.reqHeaders) {
					t.Fatalf("Access-Control-Allow-Headers %q", h.Get("Access-Control-Allow-Headers"))
				}
			}
			if tc.method == "OPTIONS" && h.Get("Access-Control-Allow-Origin") != "" && h.Get("Access-Control-Max-Age") == "" {
				t.Fatalf("no max age: %v", h)
			}
		})
	}
}

// TestRunnerCannotChangeCORS: the proxy's CORS policy is the only one a
// browser sees. A runner that answers with CORS headers of its own (an
// AG-UI server with a permissive CORS middleware: any origin, with
// credentials) must not open the proxy to origins CORS_ALLOWED_ORIGIN does
// not list, and a runner's Vary must not take away the proxy's Vary:
// Origin, or a shared cache would hand one origin's answer to another.
func TestRunnerCannotChangeCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.registerServer(t, "s-runner-cors", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
		h.Set("Access-Control-Expose-Headers", "X-Runner-Secret")
		h.Set("Vary", "Accept-Encoding")
		if r.URL.Path == "/" {
			h.Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("data: {}\n\n"))
			return
		}
		h.Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	cfg := e.proxyCfg()
	cfg.CORSOrigins = []string{"https://app.example"}
	p := startProxy(t, cfg)

	for _, path := range []string{"/health", "/agui/events"} {
		for _, tc := range []struct{ origin, allowOrigin string }{
			{origin: "https://evil.example"},
			{origin: "https://app.example", allowOrigin: "https://app.example"},
		} {
			t.Run(path+" "+tc.origin, func(t *testing.T) {
				resp := get(t, p.session("s-runner-cors", path), "Origin", tc.origin)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				h := resp.Header
				if got := h.Values("Access-Control-Allow-Origin"); len(got) > 1 || h.Get("Access-Control-Allow-Origin") != tc.allowOrigin {
					t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
				}
				for _, k := range []string{"Access-Control-Allow-Credentials", "Access-Control-Allow-Methods", "Access-Control-Expose-Headers"} {
					if v := h.Get(k); v != "" {
						t.Errorf("%s: %q from the runner", k, v)
					}
				}
				vary := strings.Join(h.Values("Vary"), ",")
				if !strings.Contains(vary, "Origin") || !strings.Contains(vary, "Accept-Encoding") {
					t.Errorf("Vary %q, want Origin and the runner's Accept-Encoding", vary)
				}
			})
		}
	}
}

// TestCrossSiteWritesRefused: CORS only hides a response from a site it does
// not allow; a page can still send a text/plain POST without a preflight. So
// a browser's POST from such a site is refused with 403 before it reaches the
// runner (with AGUI_AUTH=none it would start or interrupt a run), while the
// allowed origins, same-origin pages and clients that are not browsers (no
// Origin, no Sec-Fetch-Site: ambientctl, curl) get through, and "*" lets
// every origin through.
func TestCrossSiteWritesRefused(t *testing.T) {
	t.Parallel()
	var runs atomic.Int64
	e := newEnv(t)
	e.registerServer(t, "s-cross-site", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			runs.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	cfg := e.proxyCfg()
	cfg.CORSOrigins = []string{"https://app.example"}
	p := startProxy(t, cfg)
	anyCfg := e.proxyCfg()
	anyCfg.CORSOrigins = []string{"*"}
	pAny := startProxy(t, anyCfg)

	for _, tc := range []struct {
		name   string
		p      *proxyHandle
		path   string
		header []string
		code   int
	}{
		{name: "cross-site page", p: p, path: "/agui/run", header: []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, code: 403},
		{name: "cross-site interrupt", p: p, path: "/agui/interrupt", header: []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, code: 403},
		{name: "origin only (older browser)", p: p, path: "/agui/run", header: []string{"Origin", "https://evil.example"}, code: 403},
		{name: "same-site but not allowed", p: p, path: "/agui/run", header: []string{"Origin", "https://other.app.example", "Sec-Fetch-Site", "same-site"}, code: 403},
		{name: "allowed origin", p: p, path: "/agui/run", header: []string{"Origin", "https://app.example", "Sec-Fetch-Site", "cross-site"}, code: 200},
		{name: "same origin", p: p, path: "/agui/run", header: []string{"Sec-Fetch-Site", "same-origin"}, code: 200},
		{name: "not a browser", p: p, path: "/agui/run", code: 200},
		{name: "any origin allowed", p: pAny, path: "/agui/run", header: []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, code: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runs.Load()
			resp := postRun(t.Context(), t, tc.p.session("s-cross-site", tc.path), "{}", append([]string{"Content-Type", "text/plain"}, tc.header...)...)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			reached := runs.Load() - before
			if tc.code == http.StatusForbidden {
				if reached != 0 {
					t.Fatalf("refused, but the runner got %d POSTs", reached)
				}
				if !strings.Contains(string(body), `"error":"cross-origin request refused`) {
					t.Fatalf("body %s, want the proxy's JSON error", body)
				}
			} else if reached != 1 {
				t.Fatalf("runner got %d POSTs, want 1", reached)
			}
		})
	}
}

// registerServer serves session id with handler, an HTTP server in this
// process standing in for a runner that answers in ways the demo runner
// does not, and registers its endpoint.
func (e *env) registerServer(t *testing.T, id string, handler http.HandlerFunc) {
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
	e.register(t, registry.Endpoint{SessionID: id, Owner: "test-manager", Host: u.Hostname(), Port: port,
		PID: 1, StartedAt: time.Now().UTC(), State: registry.StateRunning})
}
