package kubetest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// Logs captures what a component logs (JSON lines, debug level) so a test can
// assert on it; with KR_TEST_LOG set the lines also go to stderr. Safe for
// concurrent use.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

// NewLogs returns a capture and a logger writing into it.
func NewLogs() (*Logs, *slog.Logger) {
	l := &Logs{}
	return l, slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Write implements io.Writer.
func (l *Logs) Write(p []byte) (int, error) {
	if os.Getenv("KR_TEST_LOG") != "" {
		_, _ = os.Stderr.Write(p) // best effort: only a debugging aid
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Lines returns the records logged so far whose message is msg and whose
// attributes include attrs (string values), in order.
func (l *Logs) Lines(tb testing.TB, msg string, attrs map[string]string) []map[string]any {
	tb.Helper()
	l.mu.Lock()
	text := l.buf.String()
	l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(text) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line %q: %v", line, err)
		}
		if rec[slog.MessageKey] != msg {
			continue
		}
		match := true
		for k, v := range attrs {
			if s, _ := rec[k].(string); s != v {
				match = false
			}
		}
		if match {
			out = append(out, rec)
		}
	}
	return out
}

// Grep returns the lines containing any of the substrings.
func (l *Logs) Grep(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.buf.String()) {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, strings.TrimSpace(line))
				break
			}
		}
	}
	return out
}
