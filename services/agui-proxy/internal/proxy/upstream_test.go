package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"strings"
	"testing"
	"time"
)

// TestStreamRoutesAskForSSE: the stream routes reach the runner asking for
// SSE (the original sent Accept: text/event-stream on every events call),
// whatever generic Accept the client sent; AG-UI's binary encoding, asked
// for by name, passes through; other routes keep the client's Accept.
func TestStreamRoutesAskForSSE(t *testing.T) {
	t.Parallel()
	accepts := make(chan string, 1) // one request per case
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accepts <- r.Header.Get("Accept")
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{}, tab, nil)
	for _, tc := range []struct {
		path, accept, want string
	}{
		{"/sessions/s1/agui/events", "", "text/event-stream"},
		{"/sessions/s1/agui/events", "*/*", "text/event-stream"},
		{"/sessions/s1/agui/events", "text/html", "text/event-stream"},
		{"/sessions/s1/agui/events", aguiProtoMediaType, aguiProtoMediaType},
		// Media types are case-insensitive: still the binary encoding.
		{"/sessions/s1/agui/events", "Application/VND.AG-UI.Event+Proto", "Application/VND.AG-UI.Event+Proto"},
		{"/sessions/s1/health", "*/*", "*/*"},
	} {
		req, err := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if got := within(t, 5*time.Second, accepts, "runner request"); got != tc.want {
			t.Errorf("%s with Accept %q: the runner saw %q, want %q", tc.path, tc.accept, got, tc.want)
		}
	}
}

// TestSSEIsNeverCacheable: a runner's own caching headers on an event
// stream are overridden; a cache that kept a live stream would replay it.
func TestSSEIsNeverCacheable(t *testing.T) {
	t.Parallel()
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, _ = io.WriteString(w, "data: 1\n\n") // the client may be gone
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{}, tab, nil)
	resp, err := http.Get(srv.URL + "/sessions/s1/agui/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Values("Cache-Control"); len(got) != 1 || got[0] != "no-cache" {
		t.Fatalf("Cache-Control %q, want only no-cache", got)
	}
}

// TestStreamRoutesAreNeverBufferedWhateverTheContentType: every answer on
// a streaming route, the binary AG-UI encoding (which passes through) and
// any other content type included, tells intermediaries not to buffer or
// cache it, overriding the runner's own caching header; a non-streaming
// route keeps the runner's headers untouched unless they are SSE.
func TestStreamRoutesAreNeverBufferedWhateverTheContentType(t *testing.T) {
	t.Parallel()
	const runnerCacheControl = "max-age=60"
	// One runner answers every case with the Content-Type the query names
	// (the query reaches the runner as sent).
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.URL.Query().Get("type"))
		w.Header().Set("Cache-Control", runnerCacheControl)
		_, _ = io.WriteString(w, "payload") // the client may be gone
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{}, tab, nil)
	for _, contentType := range []string{aguiProtoMediaType, "application/json", "text/event-stream"} {
		for _, tc := range []struct {
			method, path string
			stream       bool
		}{
			{http.MethodGet, "/sessions/s1/agui/events", true},
			{http.MethodPost, "/sessions/s1/agui/events", true},
			{http.MethodPost, "/sessions/s1/agui/run", true},
			{http.MethodGet, "/sessions/s1/health", false},
		} {
			url := srv.URL + tc.path + "?type=" + neturl.QueryEscape(contentType)
			resp := doWithAccept(t, srv.Client(), tc.method, url, aguiProtoMediaType)
			if got := resp.Header.Get("Content-Type"); got != contentType {
				t.Errorf("%s %s: Content-Type %q, want the runner's %q", tc.method, tc.path, got, contentType)
			}
			cacheControl, accel := resp.Header.Values("Cache-Control"), resp.Header.Get("X-Accel-Buffering")
			unbuffered := tc.stream || isEventStream(contentType)
			switch {
			case unbuffered && (len(cacheControl) != 1 || cacheControl[0] != "no-cache" || accel != "no"):
				t.Errorf("%s %s answering %s: Cache-Control %q, X-Accel-Buffering %q; want only no-cache, and no",
					tc.method, tc.path, contentType, cacheControl, accel)
			case !unbuffered && (len(cacheControl) != 1 || cacheControl[0] != runnerCacheControl || accel != ""):
				t.Errorf("%s %s answering %s: Cache-Control %q, X-Accel-Buffering %q; want the runner's %q, and none",
					tc.method, tc.path, contentType, cacheControl, accel, runnerCacheControl)
			}
		}
	}
}

// doWithAccept sends a bodiless request through client and returns the
// response with its body read and closed (the caller checks headers).
func doWithAccept(t *testing.T, client *http.Client, method, url, accept string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// TestRunnerNeverConnectedIs502: a connect that times out (a runner address
// that drops packets) means the runner is unreachable, 502 like a refused
// connect; 504 is for a runner that took the request and did not answer.
// A 1 ns dial timeout makes every connect time out at once.
func TestRunnerNeverConnectedIs502(t *testing.T) {
	t.Parallel()
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{DialTimeout: time.Nanosecond}, tab, nil)
	for _, path := range []string{"/sessions/s1/health", "/sessions/s1/agui/events"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var e errorBody
		if resp.StatusCode != http.StatusBadGateway || json.Unmarshal(body, &e) != nil || e.Error != "runner unreachable" {
			t.Errorf("%s: %d %s, want 502 runner unreachable", path, resp.StatusCode, strings.TrimSpace(string(body)))
		}
	}
}
