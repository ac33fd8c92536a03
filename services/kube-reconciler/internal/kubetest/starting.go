package kubetest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubewatch"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// reason is the Status reason the API server gives with code.
func reason(code int) metav1.StatusReason {
	switch code {
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusGone:
		return metav1.StatusReasonExpired
	default:
		return metav1.StatusReasonUnknown
	}
}

// Starting is a front of the API server that answers its first requests
// with the status codes it was given (503 Service Unavailable, as a
// kube-apiserver answers while it starts; then perhaps a refusal) and
// forwards the rest. client-go does not retry those without Retry-After
// itself, so each reaches the caller (an informer's reflector).
type Starting struct {
	codes    []int
	requests atomic.Int64
}

// StartingFront returns a Starting that answers request i with codes[i]
// while there are codes, and a configuration reaching the API server of
// cfg through it (plain HTTP to the front; the front talks to the API
// server as cfg's user). The front stops at the end of the test.
func StartingFront(tb testing.TB, cfg *rest.Config, codes ...int) (*Starting, *rest.Config) {
	tb.Helper()
	target, err := url.Parse(cfg.Host)
	if err != nil {
		tb.Fatalf("api server host %q: %v", cfg.Host, err)
	}
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		tb.Fatalf("api server transport: %v", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     transport,
		FlushInterval: -1, // watches stream: pass each event on at once
	}
	s := &Starting{codes: codes}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := s.requests.Add(1) - 1; i < int64(len(s.codes)) {
			code := s.codes[i]
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			// The client may be gone; nothing to do then.
			_, _ = fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"front answer %d of %d (HTTP %d)","reason":%q,"code":%d}`,
				i+1, len(s.codes), code, reason(code), code)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return s, &rest.Config{Host: srv.URL}
}

// Requests returns how many requests the front has had, answered or not.
func (s *Starting) Requests() int64 { return s.requests.Load() }

// CheckOnlyRefusalsLogged fails tb unless logs hold failed lists or
// watches (kubewatch.FailedMsg), and each is a 403 of a StartingFront: the
// 503s before were retried by kubewatch, not given to the reflector, and
// the reflector logged the refusals through the service's logger. (How
// many refusals reach the log depends on the reflector: one that tries a
// streaming watch-list first falls back to a list without logging.)
func CheckOnlyRefusalsLogged(tb testing.TB, logs *Logs) {
	tb.Helper()
	lines := logs.Lines(tb, kubewatch.FailedMsg, nil)
	if len(lines) == 0 {
		tb.Fatal("no failed list or watch logged, want the refusals")
	}
	for _, l := range lines {
		if e, _ := l[logkey.Err].(string); !strings.Contains(e, "front answer") || !strings.Contains(e, "(HTTP 403)") {
			tb.Errorf("logged failure %v, want only the front's refusals", l)
		}
	}
}
