package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClientCannotSetPlatformIdentity: the platform's runner (ambient_runner,
// POST /) takes the caller's identity from X-Current-User-Id,
// X-Current-User-Name and X-Caller-Token, which the platform's backend sets
// for the user it authenticated; it runs, attributes the run and asks for
// credentials as that user with that token. A client of the proxy sets
// them to someone else's on every route: none reaches the runner, whose
// other headers still do. Before, they passed through like any header.
func TestClientCannotSetPlatformIdentity(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 1) // one request per case
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{}, tab, nil)

	for _, rt := range []struct{ method, path string }{
		{"POST", "/sessions/s1/agui/run"},
		{"POST", "/sessions/s1/agui/interrupt"},
		{"GET", "/sessions/s1/repos/status"},
	} {
		req, err := http.NewRequest(rt.method, srv.URL+rt.path, strings.NewReader(`{"messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Current-User-Id", "someone-else")
		req.Header.Set("X-Current-User-Name", "Someone Else")
		req.Header.Set("X-Caller-Token", "someone-elses-token")
		req.Header.Set("X-Request-Id", "kept")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		h := within(t, 5*time.Second, got, rt.path)
		for _, k := range []string{"X-Current-User-Id", "X-Current-User-Name", "X-Caller-Token"} {
			if v := h.Values(k); len(v) != 0 {
				t.Errorf("%s %s: runner got %s: %q from the client", rt.method, rt.path, k, v)
			}
		}
		if h.Get("X-Request-Id") != "kept" {
			t.Errorf("%s %s: other client headers not forwarded: %v", rt.method, rt.path, h)
		}
	}
}
