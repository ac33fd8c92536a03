package demorunner

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)              // buffered: read in cleanup
	go func() { done <- s.Serve(ctx, ln) }() // owned by this test; ends on cancel
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

func readEvents(t *testing.T, body io.Reader) []Event {
	t.Helper()
	var out []Event
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		var ev Event
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
			t.Fatalf("frame %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

func postRun(ctx context.Context, t *testing.T, url, text string) *http.Response {
	t.Helper()
	body := `{"threadId":"t1","runId":"r1","messages":[{"id":"m0","role":"user","content":"ignored"},{"id":"m1","role":"assistant","content":"x"},{"id":"m2","role":"user","content":` + mustJSON(text) + `}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

func TestRunStreamsEcho(t *testing.T) {
	t.Parallel()
	_, url := startServer(t, Config{SessionID: "s1", WordDelay: time.Millisecond, Repeat: 2})
	resp := postRun(t.Context(), t, url, "hello brave world")
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content-type = %q", ct)
	}
	evs := readEvents(t, resp.Body)
	var types []string
	var text strings.Builder
	for _, e := range evs {
		types = append(types, e.Type)
		text.WriteString(e.Delta)
	}
	want := []string{EventRunStarted, EventTextMessageStart}
	for range 6 {
		want = append(want, EventTextMessageContent)
	}
	want = append(want, EventTextMessageEnd, EventRunFinished)
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("types = %v, want %v", types, want)
	}
	if got := text.String(); got != "hello brave world hello brave world" {
		t.Fatalf("text = %q", got)
	}
	if evs[0].ThreadID != "t1" || evs[0].RunID != "r1" || evs[1].Role != "assistant" {
		t.Fatalf("first events = %+v", evs[:2])
	}
}

func waitStats(t *testing.T, s *Server, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(s.StatsSnapshot()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v", s.StatsSnapshot())
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-t.Context().Done():
			return
		}
	}
}

func TestClientCancelStopsRun(t *testing.T) {
	t.Parallel()
	s, url := startServer(t, Config{WordDelay: 10 * time.Millisecond, Repeat: 100000})
	ctx, cancel := context.WithCancel(t.Context())
	resp := postRun(ctx, t, url, "a b c")
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil { // first frame arrived: run is active
		t.Fatal(err)
	}
	cancel()
	waitStats(t, s, func(st Stats) bool { return st.RunsCancelled == 1 && st.ActiveRuns == 0 })
}

func TestInterrupt(t *testing.T) {
	t.Parallel()
	s, url := startServer(t, Config{WordDelay: 10 * time.Millisecond, Repeat: 100000})
	resp := postRun(t.Context(), t, url, "a b c")
	defer resp.Body.Close()
	waitStats(t, s, func(st Stats) bool { return st.ActiveRuns == 1 })
	ireq, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/interrupt", nil)
	if err != nil {
		t.Fatal(err)
	}
	ir, err := http.DefaultClient.Do(ireq)
	if err != nil {
		t.Fatal(err)
	}
	ir.Body.Close()
	if ir.StatusCode != http.StatusOK {
		t.Fatalf("interrupt status %d", ir.StatusCode)
	}
	evs := readEvents(t, resp.Body)
	if last := evs[len(evs)-1]; last.Type != EventRunError {
		t.Fatalf("last event = %+v", last)
	}
	waitStats(t, s, func(st Stats) bool { return st.RunsInterrupted == 1 && st.ActiveRuns == 0 })
}

func TestSideEndpoints(t *testing.T) {
	t.Parallel()
	_, url := startServer(t, Config{SessionID: "s9", Workspace: "/w"})
	tests := []struct {
		name, method, path string
		code               int
	}{
		{"health", http.MethodGet, "/health", 200},
		{"mcp", http.MethodGet, "/mcp/status", 200},
		{"repos", http.MethodGet, "/repos/status", 200},
		{"stats", http.MethodGet, "/debug/stats", 200},
		{"bad run", http.MethodPost, "/", 400},
		{"unknown", http.MethodGet, "/nope", 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, url+tc.path, strings.NewReader("{bad"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"bad port", map[string]string{EnvPort: "x"}, EnvPort},
		{"bad delay", map[string]string{EnvWordDelay: "-1s"}, EnvWordDelay},
		{"bad repeat", map[string]string{EnvRepeat: "0"}, EnvRepeat},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
			}
		})
	}
}
