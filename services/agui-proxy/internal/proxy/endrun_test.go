package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// chunkRunner answers every request with contentType and then writes, and
// flushes, each chunk fed through its channel, until the request ends (the
// proxy cancelled it) or the channel closes.
func chunkRunner(t *testing.T, contentType string, chunks <-chan string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush() // the proxy may be gone
		for {
			select {
			case <-r.Context().Done():
				return
			case c, ok := <-chunks:
				if !ok {
					return
				}
				_, _ = io.WriteString(w, c) // as above
				_ = rc.Flush()
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

const (
	sseStarted  = "data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n"
	sseContent  = "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m\",\"delta\":\"hi\"}\n\n"
	sseFinished = "data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n"
	protoType   = "application/vnd.ag-ui.event+proto"
)

var (
	protoStarted  = string(protoFrame(protoArmRunStarted, "r"))
	protoFinished = string(protoFrame(protoArmRunFinished, "r"))
)

// streamEnd is how a stream the proxy ended reached its client: the bytes
// after what the runner sent, and how the body ended.
type streamEnd struct {
	added string
	err   error
}

// endStream runs a stream of chunks from a runner answering contentType
// through a proxy, reads every byte the runner sent, then calls end (which
// makes the proxy end the stream) and returns what the client got after.
func endStream(t *testing.T, cfg Config, contentType string, chunks []string, configure func(*http.Server), end func(tab *table)) streamEnd {
	t.Helper()
	feed := make(chan string, len(chunks))
	for _, c := range chunks {
		feed <- c
	}
	runner := chunkRunner(t, contentType, feed)
	tab := newTable()
	tab.set("s1", endpointOf(t, "s1", runner.URL))
	cfg.SweepInterval = 10 * time.Millisecond
	_, srv := startProxy(t, cfg, tab, configure)
	resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != contentType {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sent := strings.Join(chunks, "")
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != sent {
		t.Fatalf("read %q, %v; want the runner's %q", got, err, sent)
	}
	// The proxy followed these bytes before writing them: it has them all.
	end(tab)
	done := make(chan streamEnd, 1) // the rest of the body, read once
	go func() {                     // ends with the body, closed at the latest by the proxy's cleanup
		rest, err := io.ReadAll(resp.Body)
		done <- streamEnd{added: string(rest), err: err}
	}()
	return within(t, 5*time.Second, done, "the end of the stream")
}

func removeSession(tab *table) { tab.remove("s1") }

// TestRemovedEndpointEndsRun: a stream whose endpoint leaves the routing
// table while its run is unfinished gets one RUN_ERROR (RUNNER_GONE) in its
// encoding, at a frame boundary, then a clean end; a finished run gets
// nothing; a stream cut inside a frame, or in an encoding the proxy cannot
// add an event to, fails like a crashed runner's.
func TestRemovedEndpointEndsRun(t *testing.T) {
	t.Parallel()
	sseGone := string(runErrorFrames[endRunnerGone][encodingSSE])
	protoGone := string(runErrorFrames[endRunnerGone][encodingProto])
	tests := []struct {
		name        string
		contentType string
		chunks      []string
		keepAlive   time.Duration
		added       string
		aborted     bool
	}{
		{name: "sse unfinished", contentType: "text/event-stream", chunks: []string{sseStarted, sseContent}, added: sseGone},
		{name: "sse unfinished keepalive", contentType: "text/event-stream", chunks: []string{sseStarted, sseContent}, keepAlive: time.Hour, added: sseGone},
		{name: "sse before any event", contentType: "text/event-stream", added: sseGone},
		{name: "sse finished", contentType: "text/event-stream", chunks: []string{sseStarted, sseFinished}},
		{name: "sse finished keepalive", contentType: "text/event-stream", chunks: []string{sseStarted, sseFinished}, keepAlive: time.Hour},
		{name: "sse finished then a comment", contentType: "text/event-stream", chunks: []string{sseStarted + sseFinished, ": still here\n\n"}},
		{name: "sse finished split across reads", contentType: "text/event-stream; charset=utf-8",
			chunks: []string{sseStarted, sseFinished[:17], sseFinished[17 : len(sseFinished)-1], "\n"}},
		{name: "sse a new run after a finished one", contentType: "text/event-stream", chunks: []string{sseStarted, sseFinished, sseStarted}, added: sseGone},
		{name: "sse mid-frame", contentType: "text/event-stream", chunks: []string{sseStarted, sseContent[:30]}, aborted: true},
		{name: "sse mid-frame keepalive", contentType: "text/event-stream", chunks: []string{sseStarted, sseContent[:30]}, keepAlive: time.Hour, aborted: true},
		{name: "sse between the lines of a frame", contentType: "text/event-stream", chunks: []string{sseStarted, "id: 3\n"}, aborted: true},
		{name: "proto unfinished", contentType: protoType, chunks: []string{protoStarted}, added: protoGone},
		{name: "proto finished", contentType: protoType, chunks: []string{protoStarted, protoFinished[:3], protoFinished[3:]}},
		{name: "proto inside a length prefix", contentType: protoType, chunks: []string{protoStarted, protoFinished[:2]}, aborted: true},
		{name: "proto inside a message", contentType: protoType, chunks: []string{protoStarted, protoFinished[:6]}, aborted: true},
		{name: "other encoding", contentType: "application/json", chunks: []string{`{"partial":`}, aborted: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := endStream(t, Config{SSEKeepAlive: tc.keepAlive}, tc.contentType, tc.chunks, nil, removeSession)
			if tc.aborted {
				if got.added != "" || !errors.Is(got.err, io.ErrUnexpectedEOF) {
					t.Fatalf("after the runner's bytes: %q, %v; want nothing and unexpected EOF (an aborted response)", got.added, got.err)
				}
				return
			}
			if got.err != nil || got.added != tc.added {
				t.Fatalf("after the runner's bytes: %q, %v; want %q and a clean end", got.added, got.err, tc.added)
			}
		})
	}
}

// shuttingDown is a proxy server whose base context the test cancels, as
// health.Serve does at the end of the shutdown grace, with the proxy's
// ConnContext.
func shuttingDown(base context.Context) func(*http.Server) {
	return func(s *http.Server) {
		s.BaseContext = func(net.Listener) context.Context { return base }
		s.ConnContext = ConnContext
	}
}

// TestShutdownGraceEndsRun: when the shutdown grace is over (the server's
// base context ends), an unfinished run gets a RUN_ERROR (PROXY_SHUTDOWN)
// before the clean end, a finished one nothing, one cut mid-frame is
// aborted; a stream whose runner had not answered yet gets 503, not the
// empty 200 of a handler that writes nothing.
func TestShutdownGraceEndsRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		contentType string
		chunks      []string
		added       string
		aborted     bool
	}{
		{name: "sse unfinished", contentType: "text/event-stream", chunks: []string{sseStarted}, added: string(runErrorFrames[endShutdown][encodingSSE])},
		{name: "sse finished", contentType: "text/event-stream", chunks: []string{sseStarted, sseFinished}},
		{name: "sse mid-frame", contentType: "text/event-stream", chunks: []string{sseStarted, sseContent[:30]}, aborted: true},
		{name: "proto unfinished", contentType: protoType, chunks: []string{protoStarted}, added: string(runErrorFrames[endShutdown][encodingProto])},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, stop := context.WithCancel(context.Background())
			defer stop()
			got := endStream(t, Config{}, tc.contentType, tc.chunks, shuttingDown(base), func(*table) { stop() })
			if tc.aborted {
				if got.added != "" || !errors.Is(got.err, io.ErrUnexpectedEOF) {
					t.Fatalf("after the runner's bytes: %q, %v; want nothing and unexpected EOF", got.added, got.err)
				}
				return
			}
			if got.err != nil || got.added != tc.added {
				t.Fatalf("after the runner's bytes: %q, %v; want %q and a clean end", got.added, got.err, tc.added)
			}
		})
	}

	t.Run("before the runner answered", func(t *testing.T) {
		t.Parallel()
		asked := make(chan struct{}, 1) // the runner got the request
		runner := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			// Read to its end, the body lets the server see the proxy
			// cancel (net/http watches the connection only then).
			_, _ = io.Copy(io.Discard, r.Body)
			asked <- struct{}{}
			<-r.Context().Done() // never answers
		}))
		t.Cleanup(runner.Close)
		tab := newTable()
		tab.set("s1", endpointOf(t, "s1", runner.URL))
		base, stop := context.WithCancel(context.Background())
		defer stop()
		_, srv := startProxy(t, Config{}, tab, shuttingDown(base))
		type answer struct {
			code int
			body errorBody
			err  error
		}
		done := make(chan answer, 1) // the proxy's answer, read once
		go func() {                  // ends when the proxy answers
			resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
			if err != nil {
				done <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			var a answer
			a.code, a.err = resp.StatusCode, json.NewDecoder(resp.Body).Decode(&a.body)
			done <- a
		}()
		within(t, 5*time.Second, asked, "the runner to get the request")
		stop()
		a := within(t, 5*time.Second, done, "the proxy's answer")
		if a.err != nil || a.code != http.StatusServiceUnavailable || a.body.Error != "agui-proxy is shutting down" {
			t.Fatalf("answer %d %+v (%v), want 503 agui-proxy is shutting down", a.code, a.body, a.err)
		}
	})
}

// TestServerStopping: a request whose context ends because its client
// left is not taken for a shutdown; once the server's base context ends,
// it is.
func TestServerStopping(t *testing.T) {
	t.Parallel()
	base, stop := context.WithCancel(context.Background())
	req, cancelReq := context.WithCancel(ConnContext(base, nil))
	cancelReq() // the client left
	if serverStopping(req) || serverStopping(context.Background()) {
		t.Fatal("stopping before the server's base context ended")
	}
	stop()
	if !serverStopping(req) {
		t.Fatal("not stopping after the server's base context ended")
	}
}

// TestFinishedRunLogsNothing: a run whose runner sends RUN_FINISHED and
// ends its body is the normal case, every run ends so; the proxy relays it
// as it is and logs nothing at info about it (it used to log "stream ended
// by the proxy after its run ended", once per run, for a stream it did not
// end). A run the runner leaves unfinished is still logged and ended with
// the proxy's RUN_ERROR.
func TestFinishedRunLogsNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		chunks  []string
		wantLog string
	}{
		{name: "finished", chunks: []string{sseStarted, sseContent, sseFinished}},
		{name: "unfinished", chunks: []string{sseStarted, sseContent}, wantLog: runErrors[endIncomplete].Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			feed := make(chan string, len(tc.chunks))
			for _, c := range tc.chunks {
				feed <- c
			}
			close(feed) // the runner ends its body after the last chunk
			runner := chunkRunner(t, "text/event-stream", feed)
			tab := newTable()
			tab.set("s1", endpointOf(t, "s1", runner.URL))
			var logs testenv.Buffer
			p, err := New(Config{MaxBodyBytes: 1 << 20}, tab, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(p)
			t.Cleanup(srv.Close)
			resp, err := http.Post(srv.URL+"/sessions/s1/agui/run", "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Join(tc.chunks, ""); !strings.HasPrefix(string(body), want) {
				t.Fatalf("body %q, want it to start with %q", body, want)
			}
			// The stream is untracked after its end was logged.
			testenv.Eventually(t, 5*time.Second, func() error {
				if n := p.ActiveStreams(); n != 0 {
					return fmt.Errorf("%d streams still active", n)
				}
				return nil
			})
			got := logs.String()
			if tc.wantLog == "" && got != "" {
				t.Fatalf("a finished run logged at info:\n%s", got)
			}
			if tc.wantLog != "" && !strings.Contains(got, tc.wantLog) {
				t.Fatalf("log %q, want a record naming %s", got, tc.wantLog)
			}
		})
	}
}
