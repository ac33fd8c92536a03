package app_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSlowClientsAreCut: a client that trickles its headers is cut by
// HTTP_READ_HEADER_TIMEOUT, and one that stalls in the body of a streaming
// route by HTTP_READ_TIMEOUT (streaming routes clear deadlines only after the
// body is read).
func TestSlowClientsAreCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := startRunner(t, "s-slow")
	e.register(t, r.endpoint(t, "s-slow"))
	cfg := e.proxyCfg()
	cfg.ReadHeaderTimeout, cfg.ReadTimeout = 200*time.Millisecond, 300*time.Millisecond
	p := startProxy(t, cfg)
	addr := strings.TrimPrefix(p.url, "http://")

	tests := []struct {
		name    string
		partial string
		status  string // the proxy's answer, if any
	}{
		{name: "headers never finish", partial: "POST /sessions/s-slow/agui/run HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"},
		{name: "body never finishes", partial: "POST /sessions/s-slow/agui/run HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"threadId\":",
			status: "HTTP/1.1 408 Request Timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.partial); err != nil {
				t.Fatal(err)
			}
			// The test's own bound; the server must close well before it.
			if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			b, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("connection not closed by the proxy after %v: %v", time.Since(start), err)
			}
			if got := firstLine(string(b)); got != "" && got != tc.status {
				t.Fatalf("answer %q, want nothing or %q", got, tc.status)
			}
			t.Logf("closed after %v (answer %q)", time.Since(start).Round(time.Millisecond), firstLine(string(b)))
		})
	}
	if s := r.stats(t); s["runs_started"] != 0 {
		t.Fatalf("runner saw a run: %v", s)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}
