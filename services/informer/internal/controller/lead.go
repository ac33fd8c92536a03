package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// ErrUnsynced is wrapped by LeadAll's error when a resource's watch stayed
// unsynced for the whole limit: this leader publishes nothing new, and
// another replica may reach the API where this one does not.
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
// also returns, with an error wrapping ErrUnsynced, once a resource has
// not been synced (Leader.Synced) for unsynced, counted from the term's
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

// watchSynced returns an error wrapping ErrUnsynced once a resource of rs
// has not been seen synced for limit, or nil when ctx ends. It looks every
// limit/10, at most every second: the step-down comes at most that late.
func watchSynced(ctx context.Context, rs []Leader, limit time.Duration) error {
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
		for i, r := range rs {
			if r.Synced() {
				seen[i] = now
				continue
			}
			if d := now.Sub(seen[i]); d >= limit {
				return fmt.Errorf("%s: %w for %s", events.ResourceToken(r.Kind()), ErrUnsynced, d.Round(time.Millisecond))
			}
		}
	}
}
