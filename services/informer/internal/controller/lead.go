package controller

import (
	"context"

	"golang.org/x/sync/errgroup"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

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
// when ctx ends (nil) or the first resource fails.
func LeadAll(ctx context.Context, rs []Leader) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range rs {
		g.Go(func() error { return r.Lead(gctx) })
	}
	return g.Wait()
}
