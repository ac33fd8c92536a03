package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// table is an in-memory Resolver for tests.
type table struct {
	mu sync.Mutex
	m  map[string]registry.Endpoint // guarded by mu
}

func newTable() *table { return &table{m: map[string]registry.Endpoint{}} }

func (t *table) Lookup(id string) (registry.Endpoint, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ep, ok := t.m[id]
	return ep, ok
}

func (t *table) Resolve(_ context.Context, id string) (registry.Endpoint, error) {
	if ep, ok := t.Lookup(id); ok {
		return ep, nil
	}
	return registry.Endpoint{}, registry.ErrNoRoute
}

func (t *table) set(id string, ep registry.Endpoint) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[id] = ep
}

func (t *table) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

// endpointOf returns a record routing to the server at rawURL.
func endpointOf(t testing.TB, id, rawURL string) registry.Endpoint {
	t.Helper()
	hostport := rawURL[len("http://"):]
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("split %q: %v", rawURL, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return registry.Endpoint{SessionID: id, Owner: "test", Host: host, Port: p, PID: 1, StartedAt: time.Unix(1, 0), State: registry.StateRunning}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startProxy serves a Proxy over real HTTP; configure may set server
// timeouts. Its Run loop stops with the test.
func startProxy(t testing.TB, cfg Config, res Resolver, configure func(*http.Server)) (*Proxy, *httptest.Server) {
	t.Helper()
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	p, err := New(cfg, res, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewUnstartedServer(p)
	if configure != nil {
		configure(srv.Config)
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owned by the test; exits on cancel, waited for in Cleanup
		defer close(done)
		_ = p.Run(ctx) // Run returns nil
	}()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
	})
	return p, srv
}

// frameReader reads SSE frames ("...\n\n") from a stream.
type frameReader struct {
	r *bufio.Reader
}

func newFrameReader(r io.Reader) *frameReader { return &frameReader{r: bufio.NewReader(r)} }

// next returns the next frame including its terminating blank line (LF or
// CRLF; bare-CR framing is not used by these tests).
func (f *frameReader) next() (string, error) {
	var frame []byte
	for {
		line, err := f.r.ReadBytes('\n')
		frame = append(frame, line...)
		if err != nil {
			return string(frame), err
		}
		if string(line) == "\n" || string(line) == "\r\n" {
			return string(frame), nil
		}
	}
}

// within fails the test unless ch yields within d.
func within[T any](t testing.TB, d time.Duration, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}
