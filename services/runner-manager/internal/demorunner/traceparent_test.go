package demorunner

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestParseTraceparent(t *testing.T) {
	t.Parallel()
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		name   string
		header string
		ok     bool
	}{
		{name: "valid", header: "00-" + tid + "-" + sid + "-01", ok: true},
		{name: "not sampled", header: "00-" + tid + "-" + sid + "-00", ok: true},
		{name: "future version with more fields", header: "01-" + tid + "-" + sid + "-01-what-ever", ok: true},
		{name: "empty", header: ""},
		{name: "version ff", header: "ff-" + tid + "-" + sid + "-01"},
		{name: "version 00 with more fields", header: "00-" + tid + "-" + sid + "-01-x"},
		{name: "upper case", header: "00-" + strings.ToUpper(tid) + "-" + sid + "-01"},
		{name: "zero trace id", header: "00-" + strings.Repeat("0", 32) + "-" + sid + "-01"},
		{name: "zero parent id", header: "00-" + tid + "-" + strings.Repeat("0", 16) + "-01"},
		{name: "short trace id", header: "00-" + tid[1:] + "-" + sid + "-01"},
		{name: "missing flags", header: "00-" + tid + "-" + sid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := parseTraceparent(tc.header)
			if ok != tc.ok {
				t.Fatalf("parseTraceparent(%q) ok = %v, want %v", tc.header, ok, tc.ok)
			}
			if ok && (got.TraceID != tid || got.ParentID != sid) {
				t.Fatalf("parseTraceparent(%q) = %+v", tc.header, got)
			}
		})
	}
}

// FuzzParseTraceparent: any header is read without panicking, and what is
// accepted is what the header holds.
func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("ff-0-0-0")
	f.Add("---")
	f.Fuzz(func(t *testing.T, h string) {
		got, ok := parseTraceparent(h)
		if !ok {
			return
		}
		if !strings.Contains(h, "-"+got.TraceID+"-"+got.ParentID+"-") || !isHex(got.TraceID, 32) || !isHex(got.ParentID, 16) {
			t.Fatalf("parseTraceparent(%q) = %+v", h, got)
		}
	})
}

// TestRunLogsTrace: a run's log lines name the trace of the request that
// started it (the chat's, passed on by the proxy), so the runner's side
// of a chat is found by its trace id; a malformed traceparent is left out.
func TestRunLogsTrace(t *testing.T) {
	t.Parallel()
	var logs testenv.Buffer
	srv := httptest.NewServer(New(Config{SessionID: "s1", WordDelay: time.Millisecond, Repeat: 1},
		slog.New(slog.NewJSONHandler(&logs, nil))).Handler())
	t.Cleanup(srv.Close)
	for _, tp := range []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-nonsense-01"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/",
			strings.NewReader(`{"messages":[{"id":"m1","role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("traceparent", tp)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readEvents(t, resp.Body)
		resp.Body.Close() //nolint:errcheck // read to the end
	}
	var started []map[string]any
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "run started" {
			started = append(started, rec)
		}
	}
	if len(started) != 2 {
		t.Fatalf("%d \"run started\" lines, want 2:\n%s", len(started), logs.String())
	}
	if started[0]["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || started[0]["parent_span_id"] != "00f067aa0ba902b7" {
		t.Errorf("first run's log %v does not name its trace", started[0])
	}
	if _, ok := started[1]["trace_id"]; ok {
		t.Errorf("a malformed traceparent was logged: %v", started[1])
	}
}
