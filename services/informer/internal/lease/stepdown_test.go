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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestStepDownHoldsBack: a term that ends with ErrStepDown releases the
// lease, and the replica campaigns again only a TTL later and once
// Eligible agrees; then it leads again (nobody else took the lease).
func TestStepDownHoldsBack(t *testing.T) {
	t.Parallel()
	kv := leaseKV(t)
	var eligible atomic.Bool
	var mu sync.Mutex
	var stepped, firstAsk time.Time // guarded by mu
	e, err := New(kv, Config{Key: "informer", Holder: "a", TTL: testTTL, Eligible: func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if firstAsk.IsZero() {
			firstAsk = time.Now()
		}
		if !eligible.Load() {
			return errors.New("api unreachable")
		}
		return nil
	}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var terms atomic.Int64
	runReplica(t, e, func(ctx context.Context) error {
		if terms.Add(1) == 1 {
			mu.Lock()
			stepped = time.Now()
			mu.Unlock()
			return fmt.Errorf("watch not synced: %w", ErrStepDown)
		}
		<-ctx.Done()
		return nil
	})
	testenv.Eventually(t, 5*testTTL, func() error {
		mu.Lock()
		defer mu.Unlock()
		if firstAsk.IsZero() {
			return errors.New("Eligible not asked yet")
		}
		return nil
	})
	mu.Lock()
	held := firstAsk.Sub(stepped)
	mu.Unlock()
	if held < testTTL {
		t.Errorf("asked to campaign %v after stepping down, want at least the ttl %v", held, testTTL)
	}
	if _, err := kv.Get(t.Context(), "informer"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("lease after the step-down: %v, want released", err)
	}
	if e.IsLeader() || terms.Load() != 1 {
		t.Fatalf("leader %v after %d terms: campaigned while not eligible", e.IsLeader(), terms.Load())
	}
	eligible.Store(true)
	testenv.Eventually(t, 5*testTTL, func() error {
		if !e.IsLeader() || terms.Load() != 2 {
			return fmt.Errorf("leader %v, %d terms; want a second term", e.IsLeader(), terms.Load())
		}
		return nil
	})
}

// TestRepairRecreatesTheBucket: the leases bucket is deleted under a
// leader; its renewal fails, the next attempt to take the lease finds the
// bucket gone and calls Repair, and the replica leads again in the
// recreated bucket.
func TestRepairRecreatesTheBucket(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	cfg := jetstream.KeyValueConfig{Bucket: "leases", TTL: testTTL}
	kv, err := js.CreateKeyValue(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var repairs atomic.Int64
	e, err := New(kv, Config{Key: "informer", Holder: "a", TTL: testTTL, Repair: func(ctx context.Context) error {
		repairs.Add(1)
		_, err := js.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := runReplica(t, e)
	testenv.Eventually(t, 5*testTTL, func() error {
		if !e.IsLeader() {
			return errors.New("not leader")
		}
		return nil
	})
	if err := js.DeleteKeyValue(t.Context(), cfg.Bucket); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*testTTL, func() error {
		r.mu.Lock()
		lost := r.lost
		r.mu.Unlock()
		if lost != 1 || repairs.Load() == 0 || !e.IsLeader() || holder(t, kv) != "a" {
			return fmt.Errorf("lost %d, repairs %d, leader %v, holder %q", lost, repairs.Load(), e.IsLeader(), holder(t, kv))
		}
		return nil
	})
}
