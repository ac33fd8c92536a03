package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// healthMethod is the standard gRPC health check, which the real server
// answers without a token.
const healthMethod = "/grpc.health.v1.Health/Check"

// countHealth counts the client's health checks, and those refused, on
// their way through the real connection.
func countHealth(checks, refused *atomic.Int32) func(*apiclient.Config) {
	return func(cfg *apiclient.Config) {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(
			func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				err := invoker(ctx, method, req, reply, cc, opts...)
				if method == healthMethod {
					checks.Add(1)
					if err != nil {
						refused.Add(1)
					}
				}
				return err
			}))
	}
}

// runWatcher runs w until the test ends and fails the test if Run fails.
func runWatcher(t *testing.T, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // Run's result
	// Owned by the cleanup below, which cancels it and waits for it.
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestReconnectsWhenTheAPIAnswersAgain: during an API outage the reconnect
// backoff grows to its cap (WATCH_BACKOFF_MAX, 30 s), and the chaos suite's
// first changes after a 75 s outage reached consumers 8 s and 18 s late:
// the watcher slept out its backoff although the API was back. While it
// waits it now asks the API's health service every ProbeInterval and
// reconnects as soon as a refused check is followed by an answered one.
// The backoff here is an hour, so only the probe can bring the watch back
// within the test's bound.
func TestReconnectsWhenTheAPIAnswersAgain(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	var checks, refused atomic.Int32
	c := testenv.APIClient(t, srv, countHealth(&checks, &refused))
	store := diff.NewStore[*ambientv1.Session]()
	var reconnects atomic.Int32
	w := New(Sessions(c), store, func(string) {},
		Config{BackoffInitial: time.Hour, BackoffMax: time.Hour},
		Hooks{Reconnect: func(error, time.Duration) { reconnects.Add(1) }}, slog.New(slog.DiscardHandler))
	runWatcher(t, w.Run)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !w.Connected() {
			return errors.New("watch not synced")
		}
		return nil
	})
	syncs := w.Syncs()

	srv.StartOutage(time.Hour) // ended below, by the test
	testenv.Eventually(t, 10*time.Second, func() error {
		if reconnects.Load() == 0 || w.Connected() {
			return errors.New("the watch has not noticed the outage")
		}
		return nil
	})
	// The watcher can tell the API is back only after it saw it down: wait
	// for a refused check. Code that does not probe never gets here; the
	// check below then fails.
	seen := testenv.Poll(5*time.Second, func() error {
		if refused.Load() == 0 {
			return errors.New("no health check refused yet")
		}
		return nil
	})
	srv.EndOutage()
	// Made in-process: the API listens again, but the shared client's
	// channel comes back on its own reconnect backoff, as after a real
	// restart; the watcher is what must find the change.
	s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "after-outage"})
	if err != nil {
		t.Fatal(err)
	}
	// The probe interval is 1 s: 10 s is ten of them, and 360 times less
	// than the backoff.
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, ok := store.Get(s.GetMetadata().GetId()); !ok || !w.Connected() || w.Syncs() <= syncs {
			return fmt.Errorf("watch not re-established after the outage ended (connected %v, %d syncs, %d reconnects, %d health checks, %d refused; probe wait: %v)",
				w.Connected(), w.Syncs()-syncs, reconnects.Load(), checks.Load(), refused.Load(), seen)
		}
		return nil
	})
}

// TestAnsweringAPIKeepsTheBackoff: a probe cuts a wait short only when the
// API was seen down and answers again. An API whose health check answers
// while its list keeps failing is retried on the backoff, not once per
// probe: otherwise every probe interval would cost it a watch and a list.
func TestAnsweringAPIKeepsTheBackoff(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	var checks, refused atomic.Int32
	c := testenv.APIClient(t, srv, countHealth(&checks, &refused))
	srv.FailNext(ambientv1.SessionService_ListSessions_FullMethodName, 1000, codes.Internal)
	var reconnects atomic.Int32
	w := New(Sessions(c), diff.NewStore[*ambientv1.Session](), func(string) {},
		Config{BackoffInitial: time.Hour, BackoffMax: time.Hour, ProbeInterval: 20 * time.Millisecond},
		Hooks{Reconnect: func(error, time.Duration) { reconnects.Add(1) }}, slog.New(slog.DiscardHandler))
	runWatcher(t, w.Run)
	testenv.Eventually(t, 10*time.Second, func() error {
		if reconnects.Load() == 0 {
			return errors.New("the failing list did not end the first cycle")
		}
		return nil
	})
	lists := srv.CallCount(ambientv1.SessionService_ListSessions_FullMethodName)
	testenv.Eventually(t, 10*time.Second, func() error {
		if answered := checks.Load() - refused.Load(); answered < 10 {
			return fmt.Errorf("%d health checks answered, want 10 during the wait", answered)
		}
		return nil
	})
	if got := srv.CallCount(ambientv1.SessionService_ListSessions_FullMethodName); got != lists || reconnects.Load() != 1 {
		t.Fatalf("%d lists and %d reconnects during an hour's backoff of an answering API, want 0 and 1 (the probes must not cut it short)", got-lists, reconnects.Load())
	}
}
