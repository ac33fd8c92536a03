package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

const testTTL = time.Second

func leaseKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	return leaseKVWithTTL(t, testTTL)
}

func leaseKVWithTTL(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases", TTL: ttl})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return kv
}

// replica runs one Elector in the background and records its terms.
type replica struct {
	e      *Elector
	cancel context.CancelFunc
	done   chan error // Run's result
	once   sync.Once
	mu     sync.Mutex
	lost   int // guarded by mu; terms that ended with ErrLost
}

func startReplica(t *testing.T, kv jetstream.KeyValue, holder string, lead func(ctx context.Context) error) *replica {
	t.Helper()
	e, err := New(kv, Config{Key: "informer", Holder: holder, TTL: testTTL}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return runReplica(t, e, lead)
}

// runReplica runs e in the background (lead nil: hold until the context
// ends, counting lost terms).
func runReplica(t *testing.T, e *Elector, lead ...func(ctx context.Context) error) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &replica{e: e, cancel: cancel, done: make(chan error, 1)}
	var run func(ctx context.Context) error
	if len(lead) > 0 {
		run = lead[0]
	}
	if run == nil {
		run = func(ctx context.Context) error {
			<-ctx.Done()
			if errors.Is(context.Cause(ctx), ErrLost) {
				r.mu.Lock()
				r.lost++
				r.mu.Unlock()
			}
			return nil
		}
	}
	// Owned by the test: stopped by cancel, awaited in stop or Cleanup.
	go func() { r.done <- e.Run(ctx, run) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			// Release (2 s) and the lease watch's unsubscribe (the
			// JetStream API's 5 s default) on a server just restarted.
			t.Error("Run did not return within 15s")
		}
	})
}

func holder(t *testing.T, kv jetstream.KeyValue) string {
	t.Helper()
	e, err := kv.Get(t.Context(), "informer")
	if err != nil {
		return ""
	}
	return string(e.Value())
}

func TestSingleLeaderAndGracefulHandover(t *testing.T) {
	t.Parallel()
	// A lease far longer than any wait below: b can only lead within the
	// wait if a released the lease, never by its expiry. Standbys retry
	// often so the handover itself is quick.
	const longTTL = 2 * time.Minute
	kv := leaseKVWithTTL(t, longTTL)
	start := func(holder string) *replica {
		e, err := New(kv, Config{Key: "informer", Holder: holder, TTL: longTTL, RenewEvery: testTTL / 3, RetryEvery: 50 * time.Millisecond}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return runReplica(t, e)
	}
	a := start("a")
	testenv.Eventually(t, 5*time.Second, func() error {
		if !a.e.IsLeader() {
			return errors.New("a is not leader")
		}
		return nil
	})
	b := start("b")
	// b stays standby over several renewals and many retries of its own.
	deadline := time.Now().Add(2 * testTTL)
	for time.Now().Before(deadline) {
		if b.e.IsLeader() {
			t.Fatal("b became leader while a holds the lease")
		}
		if got := holder(t, kv); got != "a" {
			t.Fatalf("holder = %q, want a", got)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-t.Context().Done():
		}
	}
	a.stop(t) // releases the lease: b takes over without waiting for the TTL
	testenv.Eventually(t, 30*time.Second, func() error {
		if !b.e.IsLeader() {
			return fmt.Errorf("b is not leader (holder %q): a did not release its lease", holder(t, kv))
		}
		return nil
	})
}

func TestCrashedLeaderExpires(t *testing.T) {
	t.Parallel()
	kv := leaseKV(t)
	crash := errors.New("crash")
	a := startReplica(t, kv, "a", func(ctx context.Context) error { return crash })
	select {
	case err := <-a.done:
		if !errors.Is(err, crash) {
			t.Fatalf("Run = %v, want the lead error", err)
		}
		a.done <- nil // for stop
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return the lead error")
	}
	if got := holder(t, kv); got != "a" {
		t.Fatalf("holder after crash = %q, want a (left to expire)", got)
	}
	start := time.Now()
	b := startReplica(t, kv, "b", nil)
	testenv.Eventually(t, 5*time.Second, func() error {
		if !b.e.IsLeader() {
			return errors.New("b is not leader")
		}
		return nil
	})
	t.Logf("takeover %v after the crash (lease TTL %v)", time.Since(start), testTTL)
}

func TestRenewFailureStopsLeaderAtOnce(t *testing.T) {
	t.Parallel()
	kv := leaseKV(t)
	a := startReplica(t, kv, "a", nil)
	testenv.Eventually(t, 5*time.Second, func() error {
		if !a.e.IsLeader() {
			return errors.New("a is not leader")
		}
		return nil
	})
	// Someone else overwrites the lease: a's compare-and-swap renewal fails.
	if _, err := kv.Put(t.Context(), "informer", []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*testTTL, func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.lost != 1 || a.e.IsLeader() {
			return fmt.Errorf("lost terms = %d, leader = %v", a.lost, a.e.IsLeader())
		}
		return nil
	})
	// Once the intruder's entry expires, a leads again.
	testenv.Eventually(t, 5*testTTL, func() error {
		if !a.e.IsLeader() {
			return errors.New("a did not lead again")
		}
		return nil
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no key", cfg: Config{Holder: "a", TTL: time.Second}},
		{name: "no holder", cfg: Config{Key: "k", TTL: time.Second}},
		{name: "tiny ttl", cfg: Config{Key: "k", Holder: "a", TTL: time.Millisecond}},
		{name: "renew too slow", cfg: Config{Key: "k", Holder: "a", TTL: time.Second, RenewEvery: time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(nil, tc.cfg, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// outageReplica runs an Elector with its own connection to srv that waits
// reconnectWait between reconnect attempts.
func outageReplica(t *testing.T, srv *natsserver.Server, holder string, ttl, reconnectWait time.Duration) *replica {
	t.Helper()
	nc, js := testenv.JetStream(t, srv, nats.ReconnectWait(reconnectWait))
	kv, err := js.CreateOrUpdateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(kv, Config{Key: "informer", Holder: holder, TTL: ttl, Conn: nc}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return runReplica(t, e)
}

// TestOutageKeepsLeader is issue 14's "an outage looks exactly like a dead
// replica" for the informer's lease: NATS is down for longer than the TTL,
// so the lease is gone when it comes back, and the standby reconnects first.
// It must not take over: the old leader, reconnecting within a TTL, takes
// its lease back.
func TestOutageKeepsLeader(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	srv := testenv.NATS(t)
	a := outageReplica(t, srv, "a", ttl, 600*time.Millisecond) // reconnects late
	waitLeader(t, a)
	b := outageReplica(t, srv, "b", ttl, 20*time.Millisecond)
	waitStandby(t, b)
	srv.Shutdown()
	testenv.Eventually(t, 2*ttl, func() error {
		if a.e.IsLeader() {
			return errors.New("a still leads without NATS")
		}
		return nil
	})
	// The outage must outlast the TTL: no state to wait on, it is the
	// scenario.
	<-time.After(ttl + ttl/2)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// JetStream recovers its store before the KV answers again: on a
	// loaded machine that alone can take seconds.
	testenv.Eventually(t, 30*time.Second, func() error {
		if !a.e.IsLeader() {
			return errors.New("a did not take its lease back after the outage")
		}
		return nil
	})
	if b.e.Terms() != 0 {
		t.Fatalf("b led %d terms: it took over because NATS was down for everyone", b.e.Terms())
	}
}

// TestDeadLeaderReplacedAfterOutage: the wait after a reconnect does not
// keep a standby from replacing a leader that died during the outage.
func TestDeadLeaderReplacedAfterOutage(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	srv := testenv.NATS(t)
	a := outageReplica(t, srv, "a", ttl, 20*time.Millisecond)
	waitLeader(t, a)
	b := outageReplica(t, srv, "b", ttl, 20*time.Millisecond)
	waitStandby(t, b)
	srv.Shutdown()
	// Dies during the outage: no release reaches NATS. (Its Run returns
	// some seconds later, once the lease watch's unsubscribe times out;
	// Cleanup waits for it.)
	a.cancel()
	<-time.After(ttl + ttl/2)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, b)
}

func waitLeader(t *testing.T, r *replica) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if !r.e.IsLeader() {
			return errors.New("not leader")
		}
		return nil
	})
}

// waitStandby waits until r campaigns (its lease watch is set up).
func waitStandby(t *testing.T, r *replica) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if r.e.tries.Load() < 2 {
			return errors.New("not campaigning yet")
		}
		return nil
	})
}

// TestConfirmedFollowsTheLastWrite: Confirmed vouches for the lease only
// while its last write, counted from when it was sent, is younger than the
// TTL less a margin. A leader resumed from a pause longer than the TTL is
// still IsLeader until its next renewal fails, but no longer Confirmed, so
// it writes nothing as the leader meanwhile; a renewal confirms it again.
func TestConfirmedFollowsTheLastWrite(t *testing.T) {
	t.Parallel()
	kv := leaseKV(t)
	var skew atomic.Int64 // what the test adds to the clock Confirmed reads
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e, err := New(kv, Config{Key: "informer", Holder: "a", TTL: testTTL, RenewEvery: testTTL / 2, Now: clock}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Confirmed(); !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("before leading: Confirmed() = %v, want ErrUnconfirmed", err)
	}
	r := runReplica(t, e)
	testenv.Eventually(t, 5*time.Second, func() error {
		if !e.IsLeader() {
			return errors.New("not leader")
		}
		return e.Confirmed()
	})
	// A pause as long as the TTL, seen from the clock: the renewal due
	// meanwhile has not happened yet.
	skew.Store(int64(testTTL))
	if err := e.Confirmed(); !errors.Is(err, ErrUnconfirmed) || !e.IsLeader() {
		t.Fatalf("a TTL after the last write: Confirmed() = %v (leader %v), want ErrUnconfirmed while still leader", err, e.IsLeader())
	}
	// The next renewal is sent on the skewed clock and confirms the lease.
	testenv.Eventually(t, 5*time.Second, func() error { return e.Confirmed() })
	r.stop(t)
	if err := e.Confirmed(); !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("after the term: Confirmed() = %v, want ErrUnconfirmed", err)
	}
}
