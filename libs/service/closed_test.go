package service_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// maxControlLine is the embedded server's max_control_line in these tests:
// small, so a subject of longSubject's length is refused ("maximum control
// line exceeded", and the server drops the client), yet above nats.go's
// CONNECT line.
const maxControlLine = 512

// longSubject is a subject the server of natsClosingServer refuses.
var longSubject = strings.Repeat("x", 2*maxControlLine)

// natsClosingServer starts an embedded server with a small
// max_control_line: a client that publishes to longSubject gets its
// connection closed for good by nats.go (it does not reconnect after a
// protocol error).
func natsClosingServer(t *testing.T) *natsserver.Server {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("max_control_line: 512\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testenv.NATSWith(t, natsserver.Options{ConfigFile: conf})
}

// TestRunStopsWhenNATSClosesForGood: a connection nats.go closes for good
// (no reconnect follows) stops the service: the parts are stopped and Run
// returns bus.ErrClosed naming the cause, logged once as an error. Run
// went on before, unready for good, and the process never exited.
func TestRunStopsWhenNATSClosesForGood(t *testing.T) {
	t.Parallel()
	srv := natsClosingServer(t)
	logs := &testenv.Buffer{}
	ncs := make(chan *nats.Conn, 1)
	partStopped := make(chan struct{})
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}, Logger: slog.New(slog.NewTextHandler(logs, nil))},
		func(_ context.Context, rt *service.Runtime) error {
			ncs <- rt.NATS()
			rt.Go("waiter", func(ctx context.Context) error {
				<-ctx.Done()
				close(partStopped)
				return nil
			})
			return nil
		})
	r.url(t) // running
	nc := <-ncs
	if err := nc.Publish(longSubject, nil); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		if !errors.Is(err, bus.ErrClosed) || !strings.Contains(err.Error(), "maximum control line exceeded") {
			t.Errorf("Run = %v, want %v naming maximum control line exceeded", err, bus.ErrClosed)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run still running 10s after NATS closed the connection for good (connection %s, last error %v)", nc.Status(), nc.LastError())
	}
	select {
	case <-partStopped:
	default:
		t.Error("the part was not stopped")
	}
	if n := strings.Count(logs.String(), "nats connection closed for good, stopping the service"); n != 1 {
		t.Errorf("%d error logs of the close, want 1:\n%s", n, logs)
	}
}

// TestRunStopDoesNotCountOwnClose: the runtime's own drain at a requested
// stop closes the connection too; Run still returns nil and logs no
// close for good.
func TestRunStopDoesNotCountOwnClose(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	logs := &testenv.Buffer{}
	r := start(t, service.Options{Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}}, Logger: slog.New(slog.NewTextHandler(logs, nil))},
		func(_ context.Context, rt *service.Runtime) error {
			rt.Go("waiter", func(ctx context.Context) error {
				<-ctx.Done()
				return nil
			})
			return nil
		})
	r.url(t)
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil after a requested stop", err)
	}
	if strings.Contains(logs.String(), "closed for good") || !strings.Contains(logs.String(), "nats connection closed") {
		t.Errorf("logs of a requested stop, want the drain's close and no close for good:\n%s", logs)
	}
}

// TestRunSetupStopsWhenNATSClosesForGood: setup's ctx ends too when the
// connection closes for good (setup may wait on NATS, retrying), and Run
// returns the close rather than a clean stop.
func TestRunSetupStopsWhenNATSClosesForGood(t *testing.T) {
	t.Parallel()
	srv := natsClosingServer(t)
	done := make(chan error, 1)
	// Owned by the test: Run returns once setup's ctx ends.
	go func() {
		done <- service.Run(t.Context(), service.Options{Name: "svc-test", Logger: testLogger(),
			Config: service.Config{NATS: bus.ConnectConfig{URL: srv.ClientURL()}, MetricsAddr: "127.0.0.1:0"}},
			func(ctx context.Context, rt *service.Runtime) error {
				if err := rt.NATS().Publish(longSubject, nil); err != nil {
					return err
				}
				<-ctx.Done() // what a setup retrying on NATS waits for
				return ctx.Err()
			})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrClosed) {
			t.Errorf("Run = %v, want %v", err, bus.ErrClosed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("setup still waiting 10s after NATS closed the connection for good")
	}
}
