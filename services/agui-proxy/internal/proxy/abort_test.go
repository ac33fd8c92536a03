package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	fullFrame    = "data: {\"type\":\"RUN_STARTED\"}\n\n"
	partialFrame = "data: {\"type\":\"TEXT_MESS"
)

// crashingRunner answers with body, flushed, and then dies: its connection
// closes without the chunked body's terminating chunk, as when the runner
// process crashes.
func crashingRunner(t *testing.T, contentType, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, body) // the proxy may be gone
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			t.Errorf("runner hijack: %v", err)
			return
		}
		_ = conn.Close() // the crash
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRunnerCrashFailsStream: a runner that dies in the middle of a frame
// makes the client's response fail as it would directly (a chunked body
// without its terminating chunk: unexpected EOF), after every byte the
// runner sent; it never ends like a finished stream.
func TestRunnerCrashFailsStream(t *testing.T) {
	t.Parallel()
	runner := crashingRunner(t, "text/event-stream", fullFrame+partialFrame)
	direct, err := http.Post(runner.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(direct.Body)
	_ = direct.Body.Close()
	if string(b) != fullFrame+partialFrame || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("directly: %q, %v; want both frames' bytes and unexpected EOF", b, err)
	}
	for _, keepAlive := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("keepalive=%s", keepAlive), func(t *testing.T) {
			t.Parallel()
			tab := newTable()
			tab.set("s1", endpointOf(t, "s1", runner.URL))
			p, srv := startProxy(t, Config{SSEKeepAlive: keepAlive}, tab, nil)
			resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			fr := newFrameReader(resp.Body)
			if f, err := fr.next(); f != fullFrame || err != nil {
				t.Fatalf("first frame %q, %v; want %q", f, err, fullFrame)
			}
			rest, err := io.ReadAll(fr.r)
			if string(rest) != partialFrame || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("after the first frame: %q, %v; want %q and unexpected EOF", rest, err, partialFrame)
			}
			waitFor(t, func() bool { return p.ActiveStreams() == 0 }, "stream untracked")
		})
	}
}

// TestRunnerCrashFailsResponse: a non-streaming answer cut by the runner
// fails too, instead of reaching the client as a complete (truncated) body.
func TestRunnerCrashFailsResponse(t *testing.T) {
	t.Parallel()
	const partial = `{"status":"ok","mcp":[`
	runner := crashingRunner(t, "application/json", partial)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	_, srv := startProxy(t, Config{}, tab, nil)
	resp, err := http.Get(srv.URL + "/sessions/s1/mcp/status")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != partial || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%d %q, %v; want 200 %q and unexpected EOF", resp.StatusCode, b, err, partial)
	}
}

// rawRunner answers every request with the bytes of response, written as
// they are, and then closes the connection.
func rawRunner(t *testing.T, response string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close() // ends the accept loop
		wg.Wait()
	})
	wg.Go(func() { // owned by the test: ends when the listener closes
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { // one request, then the connection closes
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(conn, response) // the proxy may be gone
			})
		}
	})
	return "http://" + ln.Addr().String()
}

// TestRunnerBodyEnds: how the runner's body ends decides how the client's
// does. A body delimited by the connection's close (neither Content-Length
// nor chunking) ends normally at EOF; a malformed chunk, or a close before
// the chunked body's end or before Content-Length bytes, is a failed runner.
func TestRunnerBodyEnds(t *testing.T) {
	t.Parallel()
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	for _, tc := range []struct {
		name, response string
		wantErr        error
	}{
		{"close-delimited", head + "Connection: close\r\n\r\n" + fullFrame + "data: 2\n\n", nil},
		{"chunked", head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(fullFrame), fullFrame), nil},
		{"malformed-chunk", head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n", len(fullFrame), fullFrame) +
			"zz\r\ndata: 2\n\n\r\n0\r\n\r\n", io.ErrUnexpectedEOF},
		{"chunked-cut", head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n", len(fullFrame), fullFrame), io.ErrUnexpectedEOF},
		{"content-length-cut", head + "Content-Length: 1000\r\n\r\n" + fullFrame, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tab := newTable()
			tab.set("s1", endpointOf(t, "s1", rawRunner(t, tc.response)))
			_, srv := startProxy(t, Config{}, tab, nil)
			resp, err := http.Get(srv.URL + "/sessions/s1/agui/events")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if !strings.HasPrefix(string(b), fullFrame) || !errors.Is(err, tc.wantErr) {
				t.Fatalf("%q, %v; want %q first and error %v", b, err, fullFrame, tc.wantErr)
			}
		})
	}
}

// TestRunnerCrashResetsHTTP2Stream: the proxy serves HTTP/1.1 only, but
// behind an HTTP/2 server a runner crash resets the client's stream
// (instead of ending it with END_STREAM), after the bytes the runner sent.
func TestRunnerCrashResetsHTTP2Stream(t *testing.T) {
	t.Parallel()
	runner := crashingRunner(t, "text/event-stream", fullFrame+partialFrame)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	p, err := New(Config{MaxBodyBytes: 1 << 20}, tab, discard())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
	}
	b, err := io.ReadAll(resp.Body)
	if string(b) != fullFrame+partialFrame || err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Fatalf("%q, %v; want %q and a stream reset", b, err, fullFrame+partialFrame)
	}
}
