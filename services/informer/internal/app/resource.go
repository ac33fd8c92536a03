package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
	"github.com/ambient-code/control-plane/services/informer/internal/queue"
	"github.com/ambient-code/control-plane/services/informer/internal/watch"
)

// Per-object publish retry: from retryMin doubling to retryMax. A failed
// publish (NATS down, slow) is retried until it succeeds; other objects go on.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
	// shutdownGrace bounds one publish + KV write once shutdown began.
	shutdownGrace = 5 * time.Second
)

// fatalError marks an error that must stop the informer (the test hook's
// simulated crash), as opposed to a failed publish that is retried.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// leader is what the lease holder runs for each resource.
type leader interface {
	resource() eventsv1.Resource
	lead(ctx context.Context) error
	connected() bool
	cacheSize() int
	queueDepth() int
}

// resource runs one resource while this replica leads: cache, watch loop,
// work queue and publish workers. The same generic code serves sessions,
// projects and project settings.
type resource[T events.APIObject] struct {
	src     watch.Source[T]
	pub     *publish.Publisher
	kv      jetstream.KeyValue
	workers int
	wcfg    watch.Config
	m       *metrics
	log     *slog.Logger

	// The current term's parts, for readiness and gauges; nil while standby.
	store   atomic.Pointer[diff.Store[T]]
	queue   atomic.Pointer[queue.Queue[string]]
	watcher atomic.Pointer[watch.Watcher[T]]
}

func newResource[T events.APIObject](src watch.Source[T], pub *publish.Publisher, kv jetstream.KeyValue, workers int, wcfg watch.Config, m *metrics, log *slog.Logger) *resource[T] {
	return &resource[T]{
		src: src, pub: pub, kv: kv, workers: workers, wcfg: wcfg, m: m,
		log: log.With(slog.String(logkey.Resource, events.ResourceToken(events.ResourceOf[T]()))),
	}
}

func (r *resource[T]) resource() eventsv1.Resource { return events.ResourceOf[T]() }

func (r *resource[T]) connected() bool {
	w := r.watcher.Load()
	return w != nil && w.Connected()
}

func (r *resource[T]) cacheSize() int {
	if s := r.store.Load(); s != nil {
		return s.Len()
	}
	return 0
}

func (r *resource[T]) queueDepth() int {
	if q := r.queue.Load(); q != nil {
		return q.Len()
	}
	return 0
}

// lead loads the persisted cache, then runs the watch loop and the publish
// workers until ctx ends (nil) or a worker hits a fatal error.
func (r *resource[T]) lead(ctx context.Context) error {
	objs, err := r.load(ctx)
	if err != nil {
		return nil //nolint:nilerr // load only fails when ctx ends
	}
	store := diff.NewStore[T]()
	store.Load(objs)
	q := queue.New[string]()
	defer q.ShutDown()
	res := r.resource()
	hooks := watch.Hooks{
		Reconnect: func(error) { r.m.reconnects.Add(ctx, 1, resAttr(res)) },
		Relist: func(n int, took time.Duration) {
			r.m.relists.Add(ctx, 1, resAttr(res))
			r.log.Debug("listed", slog.Int(logkey.Count, n), slog.Duration(logkey.Duration, took))
		},
		Applied: func(d diff.Result) {
			if d.Stale > 0 {
				r.m.stale.Add(ctx, int64(d.Stale), resAttr(res))
			}
			if d.Unknown > 0 {
				r.m.unknownDel.Add(ctx, int64(d.Unknown), resAttr(res))
			}
		},
	}
	w := watch.New(r.src, store, q.Add, r.wcfg, hooks, r.log)
	r.store.Store(store)
	r.queue.Store(q)
	r.watcher.Store(w)
	defer func() {
		r.watcher.Store(nil)
		r.queue.Store(nil)
		r.store.Store(nil)
	}()
	r.log.Info("leading", slog.Int("cached", len(objs)))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := w.Run(gctx)
		q.ShutDown() // wakes the workers
		return err
	})
	retries := &retries{}
	unstored := &idSet{}
	for range r.workers {
		g.Go(func() error { return r.work(gctx, store, q, retries, unstored) })
	}
	return g.Wait()
}

// load reads the persisted cache, retrying until it succeeds or ctx ends.
func (r *resource[T]) load(ctx context.Context) ([]T, error) {
	b := watch.Backoff{Initial: retryMin, Max: retryMax, Jitter: 0.25}
	for {
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		objs, bad, err := publish.Load[T](lctx, r.kv)
		cancel()
		if err == nil {
			if bad > 0 {
				r.log.Warn("undecodable cache entries skipped", slog.Int(logkey.Count, bad))
			}
			return objs, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.log.Warn("load cache failed, retrying", slog.Any(logkey.Err, err))
		t := time.NewTimer(b.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// work publishes what the queued ids need, one id at a time per worker.
func (r *resource[T]) work(ctx context.Context, store *diff.Store[T], q *queue.Queue[string], rt *retries, unstored *idSet) error {
	for {
		id, err := q.Get(ctx)
		if err != nil {
			return nil //nolint:nilerr // shut down or ctx done: the term is over
		}
		err = r.sync(ctx, store, id, unstored)
		var fatal fatalError
		switch {
		case errors.As(err, &fatal):
			q.Done(id)
			return fmt.Errorf("%s %s: %w", events.ResourceToken(r.resource()), id, err)
		case err != nil:
			if ctx.Err() == nil {
				d := rt.failed(id)
				r.m.publishErrs.Add(ctx, 1, resAttr(r.resource()))
				r.log.Warn("publish failed, retrying", slog.String(logkey.ObjectID, id), slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, d))
				q.AddAfter(id, d)
			}
		default:
			rt.forget(id)
		}
		q.Done(id)
	}
}

// sync publishes the change id needs, if any, and records it. A publish in
// flight when the informer shuts down may finish within shutdownGrace (the
// lease is released only after it); one in flight when the lease is lost
// stops at once, because another replica may already lead.
func (r *resource[T]) sync(ctx context.Context, store *diff.Store[T], id string, unstored *idSet) error {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// Runs once ctx ends, in its own goroutine, which exits by the time
	// sync returns (cancel above ends pctx).
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(context.Cause(ctx), lease.ErrLost) {
			cancel()
			return
		}
		t := time.NewTimer(shutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-pctx.Done():
		}
	})
	defer stop()
	// A KV write that failed after its event was acked is retried first, so
	// KV never stays behind the stream.
	if unstored.has(id) {
		obj, present := store.PublishedState(id)
		if err := publish.Store(pctx, r.pub, id, obj, present); err != nil {
			return err
		}
		unstored.remove(id)
	}
	c, ok := store.Next(id)
	if !ok {
		return nil
	}
	if err := publish.Publish(pctx, r.pub, c); err != nil {
		if errors.Is(err, publish.ErrNotStored) {
			// The event is in the stream: count it as published, or the
			// next change would be diffed against a state consumers never
			// saw (a second ADDED, a MODIFIED with the wrong old object).
			store.Published(c)
			unstored.add(id)
		}
		return err
	}
	store.Published(c)
	r.log.Debug("event published", slog.String(logkey.ObjectID, id), slog.String(logkey.EventType, events.TypeName(c.Type)), slog.String(logkey.Version, c.Version))
	return nil
}

// retries counts consecutive failures per id for the retry delay.
type retries struct {
	mu sync.Mutex
	n  map[string]int // guarded by mu
}

func (rt *retries) failed(id string) time.Duration {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.n == nil {
		rt.n = map[string]int{}
	}
	n := rt.n[id]
	rt.n[id] = n + 1
	d := retryMin
	for i := 0; i < n && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

func (rt *retries) forget(id string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	delete(rt.n, id)
}

// idSet is a set of object ids, safe for concurrent use.
type idSet struct {
	mu  sync.Mutex
	ids map[string]struct{} // guarded by mu
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]struct{}{}
	}
	s.ids[id] = struct{}{}
}

func (s *idSet) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, id)
}

func (s *idSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
