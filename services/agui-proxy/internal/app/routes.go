package app

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/proxy"
)

// bucketRecheck is how long a lookup that found no runners bucket is taken
// as the answer for the requests after it: without a runner-manager (a
// kube-only installation) every session is unknown, and each of its
// requests must not cost a JetStream API call.
const bucketRecheck = 250 * time.Millisecond

// bucketWait bounds how long a request waits for the routing table's first
// snapshot of a bucket that appeared a moment ago.
const bucketWait = 2 * time.Second

// routes is the proxy's Resolver: the routing table, which reads through
// to the bucket on a miss (registry.Table.Resolve), and, while the runners
// bucket does not exist for the table yet, a look whether it does now.
//
// Why: the proxy opens the bucket once it exists, trying every
// bucketRetry. At the start of a system (make run, a fresh installation)
// runner-manager creates the bucket, registers a runner and reports its
// session Running within that second, and a client that reads Running and
// opens its stream at once got 404 "unknown session" from a proxy that had
// not opened the bucket yet.
type routes struct {
	table *registry.Table
	// absent reports whether the opener's last try found no bucket.
	absent func() bool
	// open returns the JetStream to look for the bucket in (nil before
	// NATS is set up), and nudge asks the opener to try again at once.
	js     func() jetstream.JetStream
	bucket string
	nudge  chan<- struct{}

	lookups singleflight.Group
	mu      sync.Mutex
	missed  time.Time // guarded by mu: when a lookup last found no bucket
}

var _ proxy.Resolver = (*routes)(nil)

// Lookup answers from what the table last knew, stale or not: the proxy
// checks open streams with it, and a stream opened while the table was
// fresh is not ended because NATS went out of sight (proxy.Resolver).
func (r *routes) Lookup(sessionID string) (registry.Endpoint, bool) {
	return r.table.Known(sessionID)
}

// Resolve answers from the table (reading through to the bucket); while
// the opener has found no bucket, it looks whether the bucket exists now,
// and if so has the opener open it and answers once the table holds its
// first snapshot (within ctx and bucketWait).
func (r *routes) Resolve(ctx context.Context, sessionID string) (registry.Endpoint, error) {
	ep, err := r.table.Resolve(ctx, sessionID)
	if !errors.Is(err, registry.ErrNoRoute) || !r.absent() || !r.bucketAppeared(ctx) {
		return ep, err
	}
	ctx, cancel := context.WithTimeout(ctx, bucketWait)
	defer cancel()
	select {
	case <-r.table.Synced():
	case <-ctx.Done():
		return registry.Endpoint{}, registry.ErrNoRoute
	}
	return r.table.Resolve(ctx, sessionID)
}

// bucketAppeared looks up the runners bucket (one lookup for the requests
// that ask at once, none within bucketRecheck of one that found nothing)
// and, when it exists, nudges the opener.
func (r *routes) bucketAppeared(ctx context.Context) bool {
	js := r.js()
	if js == nil {
		return false
	}
	v, _, _ := r.lookups.Do(r.bucket, func() (any, error) {
		r.mu.Lock()
		recent := time.Since(r.missed) < bucketRecheck
		r.mu.Unlock()
		if recent {
			return false, nil
		}
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bucketWait)
		defer cancel()
		if _, err := js.KeyValue(lctx, r.bucket); err != nil {
			r.mu.Lock()
			r.missed = time.Now()
			r.mu.Unlock()
			return false, nil //nolint:nilerr // no bucket (or no answer) is a miss, not a failure of the request
		}
		select {
		case r.nudge <- struct{}{}:
		default: // a nudge is pending already
		}
		return true, nil
	})
	appeared, _ := v.(bool) //nolint:errcheck // the function returns a bool
	return appeared
}
