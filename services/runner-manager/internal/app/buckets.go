package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
)

// bucketCheckEvery is how often the bucket keeper looks the buckets up. A
// lookup is one small JetStream request; a lost bucket is noticed within
// two of them (one to see it, one to confirm it).
const bucketCheckEvery = time.Second

// Backoff of a failed bucket re-creation.
const (
	bucketRepairMin = 250 * time.Millisecond
	bucketRepairMax = 10 * time.Second
)

// bucketKeeper re-creates the runners and members buckets when they are
// gone while NATS is connected: a NATS server restarted without its
// JetStream store (or a bucket deleted by hand) loses them, and nothing
// else creates them again (they are made at start-up only). Without them
// every heartbeat and claim fails for good, agui-proxy cannot route and
// new sessions' events are dead-lettered. Once they are back, the
// reconciler's sweep writes the records of the runners that still run
// here again (Reconciler.checkOwnership, claim.Claims.Reassert) and the
// heartbeat resumes on its own.
//
// The claims index's watch of a bucket deleted under it goes silent
// without an error, so it would keep the lost records and the sweep would
// see nothing to write again: Next tells the watch to read the bucket
// afresh after a re-creation, as after a reconnect (reconcile.Deps).
type bucketKeeper struct {
	js         jetstream.JetStream
	nc         *nats.Conn
	reconnects *bus.Reconnects
	configs    []jetstream.KeyValueConfig // as at start-up
	log        *slog.Logger
	every      time.Duration
	mu         sync.Mutex
	next       chan struct{} // guarded by mu; closed at the next reconnect or re-creation, then replaced
	// missing is the error of a confirmed missing bucket until it is
	// re-created (the "buckets" readiness check), nil otherwise.
	missing atomic.Pointer[error]
}

// newBucketKeeper returns the keeper of the buckets of configs.
func newBucketKeeper(js jetstream.JetStream, nc *nats.Conn, reconnects *bus.Reconnects, log *slog.Logger, configs ...jetstream.KeyValueConfig) *bucketKeeper {
	return &bucketKeeper{js: js, nc: nc, reconnects: reconnects, configs: configs, log: log, every: bucketCheckEvery, next: make(chan struct{})}
}

// Next returns a channel closed at the connection's next reconnect or the
// next re-creation of the buckets (one after the call).
func (k *bucketKeeper) Next() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.next
}

// signal closes the channel of Next.
func (k *bucketKeeper) signal() {
	k.mu.Lock()
	defer k.mu.Unlock()
	close(k.next)
	k.next = make(chan struct{})
}

// Err is the readiness check: failing while a bucket is known to be gone.
func (k *bucketKeeper) Err(context.Context) error {
	if p := k.missing.Load(); p != nil {
		return *p
	}
	return nil
}

// Run checks the buckets every k.every until ctx ends.
func (k *bucketKeeper) Run(ctx context.Context) error {
	t := time.NewTicker(k.every)
	defer t.Stop()
	seen := false // a bucket was missing at the previous check
	for {
		reconnected := k.reconnects.Next()
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			k.signal()
			continue
		case <-t.C:
		}
		gone := k.gone(ctx)
		if gone == nil {
			seen = false
			continue
		}
		// Right after a NATS restart a lookup can fail while the stream's
		// leader is elected or the store is still being read: only a
		// bucket missing at two checks in a row is re-created.
		if !seen {
			seen = true
			continue
		}
		seen = false
		k.missing.Store(&gone)
		k.log.Warn("KV bucket gone while connected; re-creating it", slog.String(logkey.Err, gone.Error()))
		if err := k.repair(ctx); err != nil {
			return nil // ctx ended
		}
		k.missing.Store(nil)
		k.signal()
		k.log.Info("KV buckets re-created; the sweep writes the claims of the runners running here again")
	}
}

// gone returns an error naming the buckets that are confirmed not to
// exist, or nil (all there, or NATS disconnected: an outage is not a lost
// bucket, and a lookup then says nothing).
func (k *bucketKeeper) gone(ctx context.Context) error {
	if !k.nc.IsConnected() {
		return nil
	}
	var errs []error
	for _, c := range k.configs {
		// Only the server's "not found" (bus.StoreGone): no responders
		// (bus.StoreMaybeGone) is also what a restarting server or an
		// election answers, and a timeout says nothing.
		if err := bus.BucketGone(ctx, k.js, c.Bucket, k.every); err != nil {
			errs = append(errs, fmt.Errorf("kv bucket %s: %w", c.Bucket, err))
		}
	}
	return errors.Join(errs...)
}

// repair runs the start-up bucket set-up again, with backoff and a warning
// per failure, until it succeeds or ctx ends (then it returns ctx's error).
func (k *bucketKeeper) repair(ctx context.Context) error {
	b := &backoff.ExponentialBackOff{InitialInterval: bucketRepairMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: bucketRepairMax}
	b.Reset()
	for {
		err := k.ensure(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("re-create buckets: %w", ctx.Err())
		}
		d := b.NextBackOff()
		k.log.Warn("re-create KV buckets", slog.String(logkey.Err, err.Error()), slog.Duration("retry_in", d))
		select {
		case <-ctx.Done():
			return fmt.Errorf("re-create buckets: %w", ctx.Err())
		case <-time.After(d):
		}
	}
}

// ensure creates every bucket with its start-up settings (the members
// bucket keeps its TTL as claim.EnsureBucket does).
func (k *bucketKeeper) ensure(ctx context.Context) error {
	for _, c := range k.configs {
		var err error
		if c.Bucket == claim.BucketMembers {
			_, _, err = bus.EnsureKVKeepTTL(ctx, k.js, c)
		} else {
			_, err = bus.EnsureKV(ctx, k.js, c)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
