package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestStalledReaderEndsStream: a client that stops reading a stream (but
// keeps its connection open) ends the stream once a write has been blocked
// for StreamWriteTimeout: the runner call is cancelled and the stream's
// goroutines exit, where before they waited forever on the full socket.
func TestStalledReaderEndsStream(t *testing.T) {
	t.Parallel()
	runnerDone := make(chan struct{})
	chunk := "data: " + strings.Repeat("x", 32<<10) + "\n\n"
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(runnerDone)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for r.Context().Err() == nil {
			if _, err := w.Write([]byte(chunk)); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(runner.Close)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	p, srv := startProxy(t, Config{StreamWriteTimeout: 300 * time.Millisecond}, tab, nil)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // fills sooner; the kernel may round it up
	}
	if _, err := fmt.Fprintf(conn, "POST /sessions/s1/agui/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
		t.Fatal(err)
	}
	// Read the headers, then stop reading while the runner keeps sending.
	if _, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), nil); err != nil {
		t.Fatal(err)
	}
	within(t, 20*time.Second, runnerDone, "the runner call to be cancelled")
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := p.ActiveStreams(); n != 0 {
			return fmt.Errorf("%d streams still active", n)
		}
		return nil
	})
}

// TestRunnerNetworks: a routing record naming an address outside
// AllowedNetworks (a forged KV entry pointing into the cluster) is refused
// with 502 and a JSON reason and never dialed, at lookup for an address and
// at dial time for a host name; an allowed one is proxied.
func TestRunnerNetworks(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	runner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(runner.Close)
	ep := endpointOf(t, "ok", runner.URL)
	tab := newTable()
	tab.set("ok", ep)
	forged := ep
	forged.SessionID, forged.Host = "forged", "169.254.169.254"
	tab.set("forged", forged)
	named := ep
	named.SessionID, named.Host = "named", "localhost"
	tab.set("named", named)
	mapped := ep
	mapped.SessionID, mapped.Host = "mapped", "::ffff:10.1.2.3"
	tab.set("mapped", mapped)

	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	_, onlyLoopback := startProxy(t, Config{AllowedNetworks: loopback}, tab, nil)
	_, onlyPods := startProxy(t, Config{AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, tab, nil)
	tests := []struct {
		name, base, session string
		code                int
	}{
		{name: "loopback runner", base: onlyLoopback.URL, session: "ok", code: 200},
		{name: "forged metadata address", base: onlyLoopback.URL, session: "forged", code: 502},
		{name: "v4-mapped address outside", base: onlyLoopback.URL, session: "mapped", code: 502},
		{name: "name resolving to loopback", base: onlyLoopback.URL, session: "named", code: 200},
		{name: "loopback outside the pod network", base: onlyPods.URL, session: "ok", code: 502},
		{name: "name resolving outside the pod network", base: onlyPods.URL, session: "named", code: 502},
	}
	for _, tc := range tests {
		before := hits.Load()
		resp, err := http.Get(tc.base + "/sessions/" + tc.session + "/health")
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error, Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&body) // a runner's 200 has no JSON
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Fatalf("%s: %d, want %d", tc.name, resp.StatusCode, tc.code)
		}
		if tc.code == 502 {
			if body.Error != "runner address not allowed" || !strings.Contains(body.Reason, "RUNNER_ALLOWED_NETWORKS") {
				t.Fatalf("%s: body %+v", tc.name, body)
			}
			if hits.Load() != before {
				t.Fatalf("%s: the refused runner was dialed", tc.name)
			}
		}
	}
}
