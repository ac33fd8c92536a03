package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/route"
)

// anyTable routes every session id to one runner and records the ids it was
// asked for.
type anyTable struct {
	ep  registry.Endpoint
	mu  sync.Mutex
	ids []string // guarded by mu
}

func (a *anyTable) Lookup(id string) (registry.Endpoint, bool) {
	a.mu.Lock()
	a.ids = append(a.ids, id)
	a.mu.Unlock()
	return a.ep, true
}

func (a *anyTable) Resolve(_ context.Context, id string) (registry.Endpoint, error) {
	ep, _ := a.Lookup(id)
	return ep, nil
}

func (a *anyTable) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := a.ids
	a.ids = nil
	return ids
}

// FuzzRouter sends arbitrary request targets and methods through the proxy
// handler. Properties: no panic; only valid session ids are looked up; the
// runner only ever sees one of the endpoints' constant paths (or the live
// tap's followed by one valid thread id); every error the proxy answers
// itself is JSON.
func FuzzRouter(f *testing.F) {
	for _, s := range []string{
		"/sessions/s1/agui/events", "/sessions/s1/agui/run", "/sessions/../health", "/sessions/a%2Fb/health",
		"/sessions/s1/health?x=%2F..", "/sessions/s1/agui/../../admin", "/sessions/s1/mcp/status/", "//sessions/s1/health",
		"/sessions/%2e%2e/repos/status", "/sessions/s1//health", "/sessions/s1/agui/interrupt#frag",
		"/sessions/s1/agui/events/t1", "/sessions/s1/agui/events/%2e%2e", "/sessions/s1/agui/events/a/../../x",
		"/projects/p/agentic-sessions/s1/agui/run", "/projects/%2e%2e/agentic-sessions/s1/agui/run",
	} {
		f.Add("GET", s)
		f.Add("POST", s)
	}
	paths := make(chan string, 1) // at most one runner call per input
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths <- r.URL.Path
		w.WriteHeader(http.StatusOK)
	}))
	defer runner.Close()
	tab := &anyTable{ep: endpointOf(f, "any", runner.URL)}
	p, err := New(Config{MaxBodyBytes: 1 << 10}, tab, discard())
	if err != nil {
		f.Fatal(err)
	}
	upstreams := map[string]bool{}
	for _, ep := range route.Endpoints() {
		upstreams[ep.Upstream] = true
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || method == "" || strings.ContainsAny(method, " \t\r\n") {
			return
		}
		req := &http.Request{Method: method, URL: u, Header: http.Header{}, Body: http.NoBody, RequestURI: target, Host: "proxy"}
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req.WithContext(t.Context()))
		for _, id := range tab.take() {
			if err := route.SessionID(id); err != nil {
				t.Fatalf("looked up invalid id %q for %q", id, target)
			}
		}
		select {
		case got := <-paths:
			thread, tap := strings.CutPrefix(got, "/events/")
			if !upstreams[got] && (!tap || route.ThreadID(thread) != nil) {
				t.Fatalf("runner saw path %q for %q", got, target)
			}
			return
		default:
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: status %d with Content-Type %q", method, target, rec.Code, ct)
		}
		if _, err := io.ReadAll(rec.Body); err != nil {
			t.Fatal(err)
		}
	})
}
