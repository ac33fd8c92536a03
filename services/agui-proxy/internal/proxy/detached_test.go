package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDetachedRunEndsWithRun: a run drained in the background is the
// proxy's, not its client's: it goes on after the 200, and ends (the
// runner's request cancelled) when the proxy's Run ends, which returns
// only then; a run accepted after that is refused. The package's TestMain
// (goleak) fails on any goroutine left behind.
func TestDetachedRunEndsWithRun(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1) // the runner wrote its first event
	ended := make(chan struct{})      // the runner's request ended
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(ended)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"type\":\"RUN_STARTED\"}\n\n")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-r.Context().Done()
	}))
	defer func() {
		// Its connections first: a run the proxy failed to end would
		// otherwise keep Close waiting for the handler for ever.
		runner.CloseClientConnections()
		runner.Close()
	}()
	tab := newTable()
	ep := endpointOf(t, "s1", runner.URL)
	ep.ProjectID = "p1"
	tab.set("s1", ep)
	p, err := New(Config{MaxBodyBytes: 1 << 20}, tab, discard())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { // owned by the test: ends with cancel
		defer close(runDone)
		_ = p.Run(ctx) // returns nil
	}()

	post := func() *http.Response {
		resp, err := http.Post(srv.URL+"/projects/p1/agentic-sessions/s1/agui/run", "application/json",
			strings.NewReader(`{"threadId":"t1","runId":"r1","messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != `{"runId":"r1","threadId":"t1"}`+"\n" {
		t.Fatalf("status %d body %q", resp.StatusCode, b)
	}
	within(t, 10*time.Second, started, "the runner never started the run")
	if n := p.ActiveStreams(); n != 1 {
		t.Fatalf("active streams %d, want the drained run", n)
	}
	select {
	case <-ended:
		t.Fatal("the run ended with its request")
	default:
	}
	cancel()
	within(t, 10*time.Second, runDone, "Run did not return")
	if n := p.ActiveStreams(); n != 0 {
		t.Fatalf("active streams %d after Run returned, want 0", n)
	}
	within(t, 10*time.Second, ended, "the runner's request was not cancelled")

	resp = post()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after Run: status %d, want 503", resp.StatusCode)
	}
	resp.Body.Close()
}

// TestRunIDs: the run path's ids are the input's; missing ones are the
// platform backend's defaults, written into the runner's input.
func TestRunIDs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body       string
		run, thread      string // "" for a new UUID (run)
		same, bad        bool
		wantBodyContains string
	}{
		{name: "both", body: `{"threadId":"t","runId":"r","messages":[]}`, run: "r", thread: "t", same: true},
		{name: "none", body: `{"messages":[]}`, thread: "s1", wantBodyContains: `"threadId":"s1"`},
		{name: "empty and null", body: `{"threadId":"","runId":null}`, thread: "s1", wantBodyContains: `"threadId":"s1"`},
		{name: "array", body: `[]`, bad: true},
		{name: "null", body: `null`, bad: true},
		{name: "empty body", body: ``, bad: true},
		{name: "thread not a string", body: `{"threadId":1}`, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ids, out, err := runIDs([]byte(tc.body), "s1")
			if tc.bad {
				if err == nil {
					t.Fatalf("runIDs(%s) = %+v, want an error", tc.body, ids)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ids.ThreadID != tc.thread || (tc.run != "" && ids.RunID != tc.run) || ids.RunID == "" {
				t.Fatalf("ids %+v, want run %q thread %q", ids, tc.run, tc.thread)
			}
			if tc.same != (string(out) == tc.body) {
				t.Fatalf("runner's input %s (from %s)", out, tc.body)
			}
			var in struct{ ThreadID, RunID string }
			if err := json.Unmarshal(out, &in); err != nil || in.ThreadID != ids.ThreadID || in.RunID != ids.RunID {
				t.Fatalf("runner's input %s carries other ids than %+v (%v)", out, ids, err)
			}
			if !strings.Contains(string(out), tc.wantBodyContains) {
				t.Fatalf("runner's input %s, want %s", out, tc.wantBodyContains)
			}
		})
	}
}
