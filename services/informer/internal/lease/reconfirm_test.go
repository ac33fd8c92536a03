package lease

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// longTTL is a lease that no renewal touches while a test runs (one every
// longTTL/2), so only Reconfirm writes it.
const longTTL = 30 * time.Second

func longLease(t *testing.T, holder string, now func() time.Time) (*Elector, jetstream.KeyValue) {
	t.Helper()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases", TTL: longTTL})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(kv, Config{Key: "informer", Holder: holder, TTL: longTTL, RenewEvery: longTTL / 2, Now: now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return e, kv
}

func revision(t *testing.T, kv jetstream.KeyValue) uint64 {
	t.Helper()
	e, err := kv.Get(t.Context(), "informer")
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}

// TestReconfirm: Reconfirm writes the lease (compare-and-swap at the
// term's revision) and returns nil while this replica holds it; once
// somebody else wrote the key it fails with ErrLost and ends the term at
// once, as a failed renewal does; a replica that does not lead gets
// ErrLost without writing anything.
func TestReconfirm(t *testing.T) {
	t.Parallel()
	e, kv := longLease(t, "a", nil)
	ctx := t.Context()
	if err := e.Reconfirm(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("before leading: Reconfirm = %v, want ErrLost", err)
	}
	a := runReplica(t, e)
	waitLeader(t, a)
	before := revision(t, kv)
	if err := e.Reconfirm(ctx); err != nil {
		t.Fatalf("leader: Reconfirm = %v", err)
	}
	if after := revision(t, kv); after != before+1 {
		t.Fatalf("lease revision %d after Reconfirm, want %d: one write", after, before+1)
	}
	if err := e.Confirmed(); err != nil {
		t.Fatalf("Confirmed after Reconfirm: %v", err)
	}

	// Another replica took the lease (after this one's had expired).
	if _, err := kv.Put(ctx, "informer", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if e.IsLeader() {
		if err := e.Reconfirm(ctx); !errors.Is(err, ErrLost) {
			t.Fatalf("after a takeover: Reconfirm = %v, want ErrLost", err)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.lost != 1 || e.IsLeader() {
			return fmt.Errorf("lost terms = %d, leader = %v; want the term ended by Reconfirm", a.lost, e.IsLeader())
		}
		return nil
	})
	if err := e.Confirmed(); !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("Confirmed after the failed Reconfirm = %v, want ErrUnconfirmed", err)
	}
	if got := holder(t, kv); got != "b" {
		t.Fatalf("holder = %q, want b: a failed Reconfirm writes nothing", got)
	}
}

// TestReconfirmSharesOneWrite: callers that ask while a lease write is
// pending share the next one sent after they asked: many conflicts at once
// (every object after a restore) cost one lease write, not one each.
func TestReconfirmSharesOneWrite(t *testing.T) {
	t.Parallel()
	var counting atomic.Bool
	var reads atomic.Int64
	clock := func() time.Time {
		if counting.Load() {
			reads.Add(1)
		}
		return time.Now()
	}
	e, kv := longLease(t, "a", clock)
	waitLeader(t, runReplica(t, e))
	before := revision(t, kv)

	const callers = 8
	e.wmu.Lock() // a write in flight: the callers queue behind it
	counting.Store(true)
	errs := make(chan error, callers)
	for range callers {
		// Owned by the test: each sends one result.
		go func() { errs <- e.Reconfirm(t.Context()) }()
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := reads.Load(); n < callers {
			return fmt.Errorf("%d of %d callers asked", n, callers)
		}
		return nil
	})
	e.wmu.Unlock()
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("Reconfirm = %v", err)
		}
	}
	if after := revision(t, kv); after != before+1 {
		t.Fatalf("lease revision %d after %d concurrent Reconfirms, want %d: one write", after, callers, before+1)
	}
}

// TestConfirmedTrustsTheBucketTTL: somebody lowers the lease bucket's TTL
// under a running leader (an informer of an older version with a lower
// LEASE_TTL rewrote it at its start). The server now expires the lease by
// the bucket's TTL, and Confirmed must not vouch for a write longer than
// that; it used to trust the configured TTL.
func TestConfirmedTrustsTheBucketTTL(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	cfg := jetstream.KeyValueConfig{Bucket: "leases", TTL: longTTL}
	kv, err := js.CreateKeyValue(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64 // what the test adds to the clock Confirmed reads
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e, err := New(kv, Config{Key: "informer", Holder: "a", TTL: longTTL, RenewEvery: longTTL / 2, Now: clock}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a := runReplica(t, e)
	waitLeader(t, a)
	cfg.TTL = 3 * time.Second
	if _, err := js.UpdateKeyValue(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconfirm(t.Context()); err != nil {
		t.Fatalf("Reconfirm: %v", err)
	}
	// 5 s after the write the key has expired on the server (3 s).
	skew.Store(int64(5 * time.Second))
	if err := e.Confirmed(); !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("5 s after the last write, in a bucket whose TTL is 3 s: Confirmed() = %v, want ErrUnconfirmed", err)
	}
}
