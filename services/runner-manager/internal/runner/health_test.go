package runner

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// TestProbeCountsOnly200: a runner is healthy when /health answers 200, as
// in the original; a 204, a redirect or an error status is not yet healthy
// (a runner still starting may answer 503, and a proxy in front of a dead
// one 502).
func TestProbeCountsOnly200(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusOK, http.StatusNoContent, http.StatusFound, http.StatusNotFound, http.StatusServiceUnavailable} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/health" {
				http.NotFound(w, r)
				return
			}
			if code == http.StatusFound {
				http.Redirect(w, r, "/elsewhere", code)
				return
			}
			w.WriteHeader(code)
		}))
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		got := probe(t.Context(), client, srv.URL+"/health", "s1", time.Second)
		srv.Close()
		if want := code == http.StatusOK; got != want {
			t.Errorf("/health answering %d: healthy %v, want %v", code, got, want)
		}
	}
}

// TestHealthChecksSessionID: a 200 whose body names another session is
// not this runner's answer (the port answers for some other runner), as
// in the peers' probe (claim.Claims.answers); one naming this session,
// or none, is healthy. Before, any 200 on the port passed the health
// check, and the session was reported Running on another's runner.
func TestHealthChecksSessionID(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]bool{
		`{"status":"ok","session_id":"s1"}`:    true,
		`{"status":"ok","session_id":"other"}`: false,
		`{"status":"ok"}`:                      true,
		`ok`:                                   true,
		``:                                     true,
		// The platform's runner (ambient_runner) over its versions: its
		// own session, none, or null before its context was set.
		`{"status":"healthy","session_id":"s1"}`:      true,
		`{"status":"healthy","session_id":"unknown"}`: false, // started without SESSION_ID
		`{"status":"healthy"}`:                        true,
		`{"status":"healthy","session_id":null}`:      true,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(body)) // the probe reads what it gets
		}))
		u, err := url.Parse(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil {
			t.Fatal(err)
		}
		p := &Process{SessionID: "s1", Port: port, done: make(chan struct{})}
		_, err = p.WaitHealthy(t.Context(), http.DefaultClient, HealthPolicy{Host: "127.0.0.1", Interval: 10 * time.Millisecond, Attempts: 5})
		srv.Close()
		if got := err == nil; got != want {
			t.Errorf("/health answering %q: healthy %v (%v), want %v", body, got, err, want)
		}
	}
}
