package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
)

// start serves s on 127.0.0.1:0 and returns its base URL. Cleanup cancels
// the server and requires a clean shutdown.
func start(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ln, err := s.Listen(ctx)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	done := make(chan error, 1)
	// Owned by this helper: ends when ctx is cancelled in cleanup, awaited there.
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return "http://" + ln.Addr().String()
}

// get does a GET with a bounded ctx and returns status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() {
		if err := resp.Body.Close(); err != nil {
			t.Errorf("close body: %v", err)
		}
	}()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(body)
}

func mustNew(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	failing := func(context.Context) error { return errors.New("down") }
	url := start(t, mustNew(t, Options{Addr: "127.0.0.1:0", Checks: map[string]Check{"db": failing}}))
	code, body := get(t, url+PathHealthz)
	// Liveness ignores readiness checks: a process whose dependency is down
	// is still alive and must not be restarted for it.
	if code != http.StatusOK || strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Errorf("GET /healthz = %d %s, want 200 {\"status\":\"ok\"}", code, body)
	}
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	ok := func(context.Context) error { return nil }
	fail := func(context.Context) error { return errors.New("nats: no servers available") }
	honorsCtx := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // lets the ctx-ignoring check return
	ignoresCtx := func(context.Context) error { <-release; return nil }
	panics := func(context.Context) error { panic("boom") }

	tests := []struct {
		name     string
		checks   map[string]Check
		wantCode int
		want     Report
	}{
		{
			name:     "no checks",
			wantCode: http.StatusOK,
			want:     Report{Status: StatusOK},
		},
		{
			name:     "all pass",
			checks:   map[string]Check{"nats": ok, "api": ok},
			wantCode: http.StatusOK,
			want: Report{Status: StatusOK, Checks: map[string]CheckResult{
				"api": {Status: StatusOK}, "nats": {Status: StatusOK},
			}},
		},
		{
			name:     "one fails",
			checks:   map[string]Check{"nats": fail, "api": ok},
			wantCode: http.StatusServiceUnavailable,
			want: Report{Status: StatusUnavailable, Failing: []string{"nats"}, Checks: map[string]CheckResult{
				"api":  {Status: StatusOK},
				"nats": {Status: StatusFail, Error: "nats: no servers available"},
			}},
		},
		{
			name:     "timeouts and panic",
			checks:   map[string]Check{"slow": honorsCtx, "stuck": ignoresCtx, "bad": panics},
			wantCode: http.StatusServiceUnavailable,
			want: Report{Status: StatusUnavailable, Failing: []string{"bad", "slow", "stuck"}, Checks: map[string]CheckResult{
				"bad":   {Status: StatusFail, Error: "check panicked: boom"},
				"slow":  {Status: StatusFail, Error: "context deadline exceeded"},
				"stuck": {Status: StatusFail, Error: "check timed out after 50ms: context deadline exceeded"},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := start(t, mustNew(t, Options{Addr: "127.0.0.1:0", Checks: tc.checks, CheckTimeout: 50 * time.Millisecond}))
			code, body := get(t, url+PathReadyz)
			if code != tc.wantCode {
				t.Errorf("GET /readyz code = %d, want %d; body %s", code, tc.wantCode, body)
			}
			var got Report
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			// "slow" may see its ctx end as either our select or its own
			// return; both are a timeout, so accept either message.
			if r, ok := got.Checks["slow"]; ok && strings.Contains(r.Error, "deadline exceeded") {
				r.Error = "context deadline exceeded"
				got.Checks["slow"] = r
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(CheckResult{}, "DurationMS")); diff != "" {
				t.Errorf("report mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "health_test_events_total", Help: "test counter"})
	reg.MustRegister(c)
	c.Add(7)
	url := start(t, mustNew(t, Options{Addr: "127.0.0.1:0", Registry: reg}))
	code, body := get(t, url+PathMetrics)
	if code != http.StatusOK || !strings.Contains(body, "health_test_events_total 7") {
		t.Errorf("GET /metrics = %d, body lacks health_test_events_total 7:\n%s", code, body)
	}

	noReg := start(t, mustNew(t, Options{Addr: "127.0.0.1:0"}))
	if code, body := get(t, noReg+PathMetrics); code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("GET /metrics without registry = %d %s, want 404 JSON error", code, body)
	}
}

func TestRouterMountsExtraRoutes(t *testing.T) {
	t.Parallel()
	s := mustNew(t, Options{Addr: "127.0.0.1:0"})
	s.Router().Get("/tally", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"sessions": 3})
	})
	if err := s.AddCheck("late", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	url := start(t, s)
	if code, body := get(t, url+"/tally"); code != http.StatusOK || strings.TrimSpace(body) != `{"sessions":3}` {
		t.Errorf("GET /tally = %d %s", code, body)
	}
	if _, body := get(t, url+PathReadyz); !strings.Contains(body, `"late"`) {
		t.Errorf("GET /readyz %s lacks the check added after New", body)
	}
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{name: "empty check name", opts: Options{Checks: map[string]Check{"": ok}}, want: ErrInvalidCheck},
		{name: "nil check", opts: Options{Checks: map[string]Check{"x": nil}}, want: ErrInvalidCheck},
		{name: "negative check timeout", opts: Options{CheckTimeout: -1}, want: ErrInvalidOptions},
		{name: "negative shutdown timeout", opts: Options{ShutdownTimeout: -1}, want: ErrInvalidOptions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tc.opts); !errors.Is(err, tc.want) {
				t.Errorf("New() err = %v, want %v", err, tc.want)
			}
		})
	}
	s := mustNew(t, Options{Checks: map[string]Check{"x": ok}})
	if err := s.AddCheck("x", ok); !errors.Is(err, ErrDuplicateCheck) {
		t.Errorf("AddCheck duplicate err = %v, want ErrDuplicateCheck", err)
	}
}

// TestRunGracefulShutdown checks that cancelling Run's ctx stops the server,
// ends long-lived requests through their ctx, and returns nil.
func TestRunGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := mustNew(t, Options{Addr: "127.0.0.1:0"})
	entered := make(chan struct{})
	s.Router().Get("/wait", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done() // cancelled when shutdown starts
		w.WriteHeader(http.StatusNoContent)
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ln, err := s.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	// Owned by this test: ends on cancel below, awaited in the select.
	go func() { done <- s.Serve(ctx, ln) }()

	type result struct {
		code int
		err  error
	}
	reqDone := make(chan result, 1) // one send
	// Owned by this test: the request ends when the handler returns at
	// shutdown; awaited below. It must not call t.Fatal, so it sends errors.
	go func() {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+"/wait", nil)
		if err != nil {
			reqDone <- result{err: err}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			reqDone <- result{err: err}
			return
		}
		reqDone <- result{code: resp.StatusCode, err: resp.Body.Close()}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("request did not reach the handler")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancel")
	}
	if r := <-reqDone; r.err != nil || r.code != http.StatusNoContent {
		t.Errorf("in-flight request = %d, %v; want 204", r.code, r.err)
	}
}

func TestRunListenError(t *testing.T) {
	t.Parallel()
	s := mustNew(t, Options{Addr: "127.0.0.1:99999"})
	if err := s.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "127.0.0.1:99999") {
		t.Errorf("Run with a bad address = %v, want an error naming it", err)
	}
}
