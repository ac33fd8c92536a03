package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// ErrUnsynced is wrapped by LeadAll's error when every resource's watch
// stayed unsynced for the whole limit: this leader publishes nothing new,
// and another replica may reach the API where this one does not.
var ErrUnsynced = errors.New("watch not synced")

// Leader is what the lease holder runs for each resource; *Resource[T]
// is one for every T.
type Leader interface {
	Kind() eventsv1.Resource
	Lead(ctx context.Context) error
	Synced() bool
	CacheSize() int
	QueueDepth() int
}

// LeadAll runs every resource while the lease is held (ctx), and returns
// when ctx ends (nil) or the first resource fails. With unsynced > 0 it
// also returns, with an error wrapping ErrUnsynced, once no resource has
// been synced (Leader.Synced) for unsynced, each counted from the term's
// start or from when it was last seen synced: the caller then steps down.
func LeadAll(ctx context.Context, rs []Leader, unsynced time.Duration) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range rs {
		g.Go(func() error { return r.Lead(gctx) })
	}
	if unsynced > 0 {
		g.Go(func() error { return watchSynced(gctx, rs, unsynced) })
	}
	return g.Wait()
}

// watchSynced returns an error wrapping ErrUnsynced once every resource
// of rs has not been seen synced for limit, or nil when ctx ends. It looks
// every limit/10, at most every second: the step-down comes at most that
// late.
//
// Why every resource and not any: a leader cut off from the API (the
// case the step-down is for) loses every watch at once. One resource
// whose list or watch keeps failing while the others sync (a row the
// server cannot convert, a permission missing for that service) fails the
// same way on every replica: stepping down would not bring it back, only
// stop the other resources' events for a lease TTL and relist them, term
// after term. That resource stays visible on /readyz (leaderSynced) and in
// informer_watch_reconnects_total, and its watch keeps retrying.
func watchSynced(ctx context.Context, rs []Leader, limit time.Duration) error {
	if len(rs) == 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(min(limit/10, time.Second))
	defer tick.Stop()
	start := time.Now()
	seen := make([]time.Time, len(rs)) // when each was last seen synced
	for i := range seen {
		seen[i] = start
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		// The resource seen synced last: the step-down waits for it.
		last := seen[0]
		for i, r := range rs {
			if r.Synced() {
				seen[i] = now
			}
			last = later(last, seen[i])
		}
		if d := now.Sub(last); d >= limit {
			return fmt.Errorf("every resource: %w for %s", ErrUnsynced, d.Round(time.Millisecond))
		}
	}
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
