package runner

import (
	"net/http"
	"net/http/httptest"
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
		got := probe(t.Context(), client, srv.URL+"/health", time.Second)
		srv.Close()
		if want := code == http.StatusOK; got != want {
			t.Errorf("/health answering %d: healthy %v, want %v", code, got, want)
		}
	}
}
