package health

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveOne serves h with g on a loopback port; it returns the URL, a func
// that cancels Serve's ctx, and the channel Serve's result arrives on.
func serveOne(t *testing.T, h http.Handler, g Graceful) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	done := make(chan error, 1) // Serve's result, sent once
	// Owned by the test: ends when ctx is cancelled; each test awaits done.
	go func() {
		done <- Serve(ctx, "test", &http.Server{Handler: h, ReadHeaderTimeout: time.Second}, ln, g, slog.New(slog.DiscardHandler))
	}()
	return "http://" + ln.Addr().String(), cancel, done
}

// request starts a GET whose status (or error) arrives on the channel.
func request(t *testing.T, url string) <-chan error {
	t.Helper()
	res := make(chan error, 1) // one send
	// Owned by the test: ends when the response is read; awaited by callers.
	go func() {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			res <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- err
			return
		}
		_, err = io.Copy(io.Discard, resp.Body)
		res <- errors.Join(err, resp.Body.Close())
	}()
	return res
}

func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing within 10s", what)
		var zero T
		return zero
	}
}

// TestServeGraceLetsRequestsFinish: during the grace an in-flight request
// keeps its ctx and finishes on its own (a proxied run reaching its end).
func TestServeGraceLetsRequestsFinish(t *testing.T) {
	t.Parallel()
	entered, finish := make(chan struct{}), make(chan struct{})
	cancelled := make(chan bool, 1) // what the handler saw, sent once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-finish:
			cancelled <- false
		case <-r.Context().Done():
			cancelled <- true
		}
	})
	url, cancel, done := serveOne(t, h, Graceful{Grace: time.Minute})
	res := request(t, url)
	recv(t, entered, "handler entered")
	cancel()
	close(finish)
	if recv(t, cancelled, "handler result") {
		t.Error("request ctx cancelled during the grace")
	}
	if err := recv(t, res, "response"); err != nil {
		t.Errorf("request = %v, want a complete response", err)
	}
	if err := recv(t, done, "Serve"); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
}

// TestServeCancelsAfterGrace: a request still open when the grace ends has
// its ctx cancelled, so a stream ends cleanly and Serve returns nil.
func TestServeCancelsAfterGrace(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	url, cancel, done := serveOne(t, h, Graceful{Grace: 50 * time.Millisecond})
	res := request(t, url)
	recv(t, entered, "handler entered")
	cancel()
	if err := recv(t, done, "Serve"); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if err := recv(t, res, "response"); err != nil {
		t.Errorf("request = %v, want the (empty) response of a handler that returned", err)
	}
}

// TestServeDrainExceeded: a handler that ignores its ctx beyond the drain
// is cut off, and Serve says the shutdown failed.
func TestServeDrainExceeded(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release // ignores its ctx on purpose
	})
	url, cancel, done := serveOne(t, h, Graceful{Drain: 50 * time.Millisecond})
	res := request(t, url)
	recv(t, entered, "handler entered")
	cancel()
	if err := recv(t, done, "Serve"); err == nil {
		t.Error("Serve = nil, want a shutdown error")
	}
	close(release)
	// The connection was cut under the request: any outcome will do, the
	// wait only keeps the request goroutine from outliving the test.
	_ = recv(t, res, "response")
}

// TestServeKeepsServingDuringDelay: for Delay after ctx ends the server
// still accepts new connections (a terminating pod still gets them until
// the endpoints update reaches kube-proxy); only then does it shut down.
func TestServeKeepsServingDuringDelay(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{wrote: make(chan struct{}, 1)}
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // Serve's result, sent once
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	// Owned by the test: ends after cancel and the delay; awaited below.
	go func() {
		done <- Serve(ctx, "test", &http.Server{Handler: h, ReadHeaderTimeout: time.Second}, ln,
			Graceful{Delay: 5 * time.Second}, slog.New(slog.NewTextHandler(logs, nil)))
	}()
	url := "http://" + ln.Addr().String()
	if err := recv(t, request(t, url), "request before the stop"); err != nil {
		t.Fatal(err)
	}
	cancel()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(logs.String(), "stopping after a delay") {
		select {
		case <-logs.wrote:
		case <-timeout:
			t.Fatalf("Serve did not start its delay after ctx ended; logs:\n%s", logs)
		}
	}
	// Within the 5 s delay: a new connection is still served.
	if err := recv(t, request(t, url), "request during the delay"); err != nil {
		t.Fatalf("a new request during the delay failed: %v", err)
	}
	if err := recv(t, done, "Serve's return"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, request(t, url), "request after the stop"); err == nil {
		t.Fatal("a request after Serve returned was served")
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and a reader at once;
// wrote (buffered 1) gets a token after each write.
type lockedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select { // after the write: a reader woken by it sees the bytes
	case b.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
