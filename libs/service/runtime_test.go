package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
)

func testLogger() *slog.Logger {
	if os.Getenv("SERVICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// running is one service.Run in a goroutine owned by the test.
type running struct {
	addr   chan string // the health server's address, sent once
	done   chan error  // Run's result, sent once
	cancel context.CancelFunc
}

// start runs service.Run with setup until the test ends.
func start(t *testing.T, opts service.Options, setup func(context.Context, *service.Runtime) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{addr: make(chan string, 1), done: make(chan error, 1), cancel: cancel}
	opts.Name = "svc-test"
	if opts.Logger == nil { // a test that reads the logs brings its own
		opts.Logger = testLogger()
	}
	opts.Config.MetricsAddr = "127.0.0.1:0"
	opts.Listening = func(a net.Addr) { r.addr <- a.String() }
	// Owned by the test: ends when ctx is cancelled; stop or Cleanup waits.
	go func() { r.done <- service.Run(ctx, opts, setup) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			_ = err // each test that cares checks Run's result itself (stop)
		case <-time.After(20 * time.Second):
			t.Error("Run did not return within 20s of cancel")
		}
	})
	return r
}

// url waits for the health server and returns its base URL.
func (r *running) url(t *testing.T) string {
	t.Helper()
	select {
	case a := <-r.addr:
		r.addr <- a // for the next caller
		return "http://" + a
	case err := <-r.done:
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("health server did not listen")
	}
	return ""
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of cancel")
		return nil
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func readyz(t *testing.T, base string) (int, health.Report) {
	t.Helper()
	code, body := get(t, base+health.PathReadyz)
	var rep health.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("decode /readyz %q: %v", body, err)
	}
	return code, rep
}

// TestRunServesAndStops: the runtime serves the declared route and checks
// next to its own, runs the parts, and on stop runs the cleanups in reverse
// order after the parts, then drains NATS, so what a part publishes as it
// stops still arrives.
func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	sub, err := testenv.Conn(t, srv).SubscribeSync("svc.bye")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		order []string // guarded by mu
	)
	record := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	var nc *nats.Conn
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
		nc = rt.NATS()
		rt.Router().Get("/hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") })
		rt.Check("custom", func(context.Context) error { return nil })
		rt.Go("farewell", func(ctx context.Context) error {
			<-ctx.Done()
			record("part stopped")
			// Not flushed: only the drain after the parts delivers it.
			return rt.NATS().Publish("svc.bye", []byte("bye"))
		})
		rt.Cleanup(func() error { record("cleanup 1"); return nil })
		rt.Cleanup(func() error { record("cleanup 2"); return nil })
		return nil
	})
	base := r.url(t)
	if code, body := get(t, base+"/hello"); code != http.StatusOK || body != "hi" {
		t.Errorf("GET /hello = %d %q, want 200 hi", code, body)
	}
	code, rep := readyz(t, base)
	if code != http.StatusOK || len(rep.Checks) != 2 || rep.Checks[service.CheckNATS].Status != health.StatusOK || rep.Checks["custom"].Status != health.StatusOK {
		t.Errorf("/readyz = %d %+v, want 200 with nats and custom ok", code, rep)
	}
	if code, body := get(t, base+health.PathMetrics); code != http.StatusOK || !strings.Contains(body, "target_info") {
		t.Errorf("/metrics = %d without the service's registry", code)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil after a requested stop", err)
	}
	mu.Lock()
	got := slices.Clone(order)
	mu.Unlock()
	if want := []string{"part stopped", "cleanup 2", "cleanup 1"}; !slices.Equal(got, want) {
		t.Errorf("shutdown order = %v, want %v", got, want)
	}
	if !nc.IsClosed() {
		t.Error("NATS connection open after Run returned")
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "bye" {
		t.Errorf("message published while stopping = %v, %v; want bye (drained)", m, err)
	}
}

// TestRunPartFailure: a failing part stops the others and Run returns its
// error under the part's name.
func TestRunPartFailure(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	boom := errors.New("boom")
	otherStopped := make(chan struct{})
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}}, func(_ context.Context, rt *service.Runtime) error {
		rt.Go("worker", func(context.Context) error { return boom })
		rt.Go("other", func(ctx context.Context) error {
			<-ctx.Done()
			close(otherStopped)
			return nil
		})
		return nil
	})
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "worker: ") {
			t.Errorf("Run = %v, want worker: boom", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop after a part failed")
	}
	select {
	case <-otherStopped:
	default:
		t.Error("the other part was not stopped")
	}
}

// TestRunSetupAndDeclarations: setup's error is Run's, unless the service
// was asked to stop meanwhile; bad declarations fail before anything runs.
func TestRunSetupAndDeclarations(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	bad := errors.New("bucket missing")
	noop := func(context.Context) error { return nil }
	tests := []struct {
		name   string
		cancel bool // ctx is cancelled before setup returns
		setup  func(ctx context.Context, rt *service.Runtime) error
		want   error
	}{
		{name: "setup fails", setup: func(context.Context, *service.Runtime) error { return bad }, want: bad},
		{name: "stopped while setting up", cancel: true, setup: func(ctx context.Context, _ *service.Runtime) error {
			<-ctx.Done()
			return fmt.Errorf("open bucket: %w", ctx.Err())
		}},
		{name: "duplicate part", setup: func(_ context.Context, rt *service.Runtime) error {
			rt.Go("p", noop)
			rt.Go("p", noop)
			return nil
		}, want: service.ErrInvalidOptions},
		{name: "duplicate check", setup: func(_ context.Context, rt *service.Runtime) error {
			rt.Check(service.CheckNATS, noop)
			return nil
		}, want: service.ErrInvalidOptions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			setup := tc.setup
			if tc.cancel {
				setup = func(ctx context.Context, rt *service.Runtime) error {
					cancel()
					return tc.setup(ctx, rt)
				}
			}
			err := service.Run(ctx, service.Options{Name: "svc-test", Logger: testLogger(),
				Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}, MetricsAddr: "127.0.0.1:0"}}, setup)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Run = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRunConnect: by default Run waits for NATS and gives up with
// bus.ErrNotConnected when stopped first; in the background mode it serves
// at once and "nats" turns ready when the server appears.
func TestRunConnect(t *testing.T) {
	t.Parallel()
	t.Run("waits", func(t *testing.T) {
		t.Parallel()
		low, _ := testenv.FreePortRange(t, 1) // nothing listens there
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err := service.Run(ctx, service.Options{Name: "svc-test", Logger: testLogger(),
			Config: service.Config{NATS: bus.ConnectConfig{URL: "nats://127.0.0.1:" + strconv.Itoa(low)}, MetricsAddr: "127.0.0.1:0"}},
			func(context.Context, *service.Runtime) error {
				t.Error("setup ran without NATS")
				return nil
			})
		if !errors.Is(err, bus.ErrNotConnected) {
			t.Errorf("Run = %v, want %v", err, bus.ErrNotConnected)
		}
	})
	t.Run("background", func(t *testing.T) {
		t.Parallel()
		low, _ := testenv.FreePortRange(t, 1)
		cfg := service.Config{NATS: bus.ConnectConfig{URL: "nats://127.0.0.1:" + strconv.Itoa(low), ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}}
		r := start(t, service.Options{Config: cfg, ConnectInBackground: true}, func(context.Context, *service.Runtime) error { return nil })
		base := r.url(t)
		if code, rep := readyz(t, base); code != http.StatusServiceUnavailable || !slices.Equal(rep.Failing, []string{service.CheckNATS}) {
			t.Errorf("/readyz before NATS = %d %+v, want 503 failing nats", code, rep)
		}
		testenv.NATSWith(t, natsserver.Options{Port: low})
		testenv.Eventually(t, 10*time.Second, func() error {
			if code, rep := readyz(t, base); code != http.StatusOK {
				return fmt.Errorf("/readyz = %d %+v", code, rep)
			}
			return nil
		})
		if err := r.stop(t); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestRunReadinessInNATSOutage: once connected, a service started with
// ConnectInBackground stays ready through a NATS outage (it keeps working
// without NATS, agui-proxy from its last routing table, and must stay in
// its Service), while a normal one goes unready.
func TestRunReadinessInNATSOutage(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	cfg := service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL(), ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}}
	conns := make(chan *nats.Conn, 1)
	background := start(t, service.Options{Config: cfg, ConnectInBackground: true, Connected: func(nc *nats.Conn) { conns <- nc }},
		func(context.Context, *service.Runtime) error { return nil })
	normal := start(t, service.Options{Config: cfg}, func(context.Context, *service.Runtime) error { return nil })
	bgURL, normalURL := background.url(t), normal.url(t)
	for _, base := range []string{bgURL, normalURL} {
		testenv.Eventually(t, 10*time.Second, func() error {
			if code, rep := readyz(t, base); code != http.StatusOK {
				return fmt.Errorf("/readyz of %s before the outage = %d %+v", base, code, rep)
			}
			return nil
		})
	}
	nc := <-conns

	srv.Shutdown()
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, rep := readyz(t, normalURL); code != http.StatusServiceUnavailable || !slices.Equal(rep.Failing, []string{service.CheckNATS}) {
			return fmt.Errorf("normal service /readyz in the outage = %d %+v, want 503 failing nats", code, rep)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("background service still connected")
		}
		return nil
	})
	if code, rep := readyz(t, bgURL); code != http.StatusOK {
		t.Errorf("background service /readyz in the outage = %d %+v, want 200", code, rep)
	}
}

// TestRunListener: a listener bound by the caller is the one served, and
// is closed even when Run fails before serving.
func TestRunListener(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	cfg := service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}
	listen := func() net.Listener {
		ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	t.Run("served", func(t *testing.T) {
		t.Parallel()
		ln := listen()
		r := start(t, service.Options{Config: cfg, Listener: ln}, func(context.Context, *service.Runtime) error { return nil })
		if got, want := r.url(t), "http://"+ln.Addr().String(); got != want {
			t.Errorf("served on %s, want the given listener %s", got, want)
		}
		if code, _ := get(t, r.url(t)+health.PathHealthz); code != http.StatusOK {
			t.Errorf("/healthz = %d", code)
		}
	})
	t.Run("closed after a failed setup", func(t *testing.T) {
		t.Parallel()
		ln := listen()
		err := service.Run(t.Context(), service.Options{Name: "svc-test", Logger: testLogger(), Config: cfg, Listener: ln},
			func(context.Context, *service.Runtime) error { return errors.New("no") })
		if err == nil {
			t.Fatal("Run = nil, want setup's error")
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Run = %v, want %v", err, net.ErrClosed)
		}
	})
}

// TestPublishAsyncAckTimesOut: an asynchronous publish whose ack never
// comes fails after PublishAsyncTimeout instead of waiting forever. The ack
// is lost here the way no server fault can be arranged on cue: a plain
// subscriber takes the message and never answers.
func TestPublishAsyncAckTimesOut(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	futures := make(chan jetstream.PubAckFuture, 1)
	start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}, PublishAsyncTimeout: 100 * time.Millisecond},
		func(_ context.Context, rt *service.Runtime) error {
			if _, err := rt.NATS().Subscribe("blackhole", func(*nats.Msg) {}); err != nil {
				return fmt.Errorf("subscribe: %w", err)
			}
			if err := rt.NATS().Flush(); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
			f, err := rt.JetStream().PublishAsync("blackhole", []byte("x"))
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			futures <- f
			return nil
		})
	var f jetstream.PubAckFuture
	select {
	case f = <-futures:
	case <-time.After(20 * time.Second):
		t.Fatal("setup did not publish")
	}
	select {
	case err := <-f.Err():
		if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
			t.Fatalf("ack error = %v, want %v", err, jetstream.ErrAsyncPublishTimeout)
		}
	case <-f.Ok():
		t.Fatal("acked by a subscriber that never answers")
	case <-time.After(10 * time.Second):
		t.Fatal("no ack and no error 10 s after the publish: the wait has no bound")
	}
}
