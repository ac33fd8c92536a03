package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/util/workqueue"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
	"github.com/ambient-code/control-plane/services/informer/internal/watch"
)

// Per-object publish retry: from retryMin doubling to retryMax (the work
// queue's rate limiter). A failed publish (NATS down, slow) is retried until
// it succeeds; other objects go on.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
	// loadTimeout bounds one read of the persisted cache.
	loadTimeout = time.Minute
	// tailTimeout bounds one read of the events stream's tail, tailBudget
	// all of them (see load).
	tailTimeout = 10 * time.Second
	tailBudget  = 30 * time.Second
	// rebuildTimeout bounds one rebuild of the cache from the events
	// stream (publish.Rebuild) and all of them: one message per object,
	// 5-10 s for 100,000 sessions on 2 busy cores (README, "Objects
	// bucket lost").
	rebuildTimeout = 2 * time.Minute
)

// Config tunes every Resource.
type Config struct {
	// Workers is the number of publish workers per resource.
	Workers int
	// Watch tunes the watch loop (reconnect backoff, resync).
	Watch watch.Config
	// AuditInterval is how often the leader compares the objects bucket
	// with what it published and writes the entries that disagree again
	// (auditKV); 0 disables it.
	AuditInterval time.Duration
	// StreamCheck is how often the leader looks whether the events stream
	// was created again under its term (watchStream; DefaultStreamCheck);
	// 0 disables the periodic look.
	StreamCheck time.Duration
}

// Reporter puts the reason on an object whose state consumers cannot get
// (tooLarge: only a reference event was published) and takes it off once a
// version is published complete again. Needed runs for every published
// version and must be cheap; Write runs only when Needed said so, and its
// failures are retried like a failed publish unless Terminal says no retry
// can help.
type Reporter[T events.APIObject] struct {
	Needed   func(c diff.Change[T], tooLarge bool) bool
	Write    func(ctx context.Context, id string, tooLarge bool) error
	Terminal func(err error) bool
}

// Option adjusts a Resource.
type Option[T events.APIObject] func(*Resource[T])

// WithReporter makes the resource report objects over the payload limit
// through rep (sessions: a condition on the session).
func WithReporter[T events.APIObject](rep Reporter[T]) Option[T] {
	return func(r *Resource[T]) { r.report = &rep }
}

// queue is the work queue of one term: object ids, rate-limited per id.
type queue = workqueue.TypedRateLimitingInterface[string]

// Resource runs one resource while this replica leads: cache, watch loop,
// work queue and publish workers. Its methods are safe for concurrent use;
// Lead runs one term at a time.
type Resource[T events.APIObject] struct {
	src watch.Source[T]
	pub *publish.Publisher
	kv  jetstream.KeyValue
	cfg Config
	m   *Metrics
	log *slog.Logger
	// report is nil for resources without a place to put the reason.
	report *Reporter[T]

	// The current term's parts, for readiness and gauges; nil while standby.
	store   atomic.Pointer[diff.Store[T]]
	queue   atomic.Pointer[queue]
	watcher atomic.Pointer[watch.Watcher[T]]
}

// New returns the controller of the resource T, reading the API through
// src and publishing through pub; kv is the persisted cache (the objects
// bucket). It starts nothing.
func New[T events.APIObject](src watch.Source[T], pub *publish.Publisher, kv jetstream.KeyValue, cfg Config, m *Metrics, log *slog.Logger, opts ...Option[T]) *Resource[T] {
	r := &Resource[T]{
		src: src, pub: pub, kv: kv, cfg: cfg, m: m,
		log: log.With(slog.String(logkey.Resource, events.ResourceToken(events.ResourceOf[T]()))),
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Kind is the resource this controller runs.
func (r *Resource[T]) Kind() eventsv1.Resource { return events.ResourceOf[T]() }

// Synced reports whether this replica leads and the watch is open and synced.
func (r *Resource[T]) Synced() bool {
	w := r.watcher.Load()
	return w != nil && w.Connected()
}

// CacheSize is the number of cached objects (0 while standby).
func (r *Resource[T]) CacheSize() int {
	if s := r.store.Load(); s != nil {
		return s.Len()
	}
	return 0
}

// Range calls fn with each cached object's encoded state (nothing while
// standby); see diff.Store.Range.
func (r *Resource[T]) Range(fn func(events.Encoded)) {
	if s := r.store.Load(); s != nil {
		s.Range(fn)
	}
}

// QueueDepth is the number of ids waiting to be published (0 while standby).
func (r *Resource[T]) QueueDepth() int {
	if q := r.queue.Load(); q != nil {
		return (*q).Len()
	}
	return 0
}

// Lead loads the persisted cache, then runs the watch loop and the publish
// workers until ctx ends (nil), a worker hits a FatalError, or the events
// stream or the objects bucket turns out gone (an error wrapping ErrGone).
func (r *Resource[T]) Lead(ctx context.Context) error {
	c, err := r.load(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	objs, unstored := c.objects, c.unstored
	store := diff.NewStore[T]()
	if bad := store.LoadKV(objs, c.seqs, c.revs); bad > 0 {
		r.log.Warn("unencodable cache entries skipped", slog.Int(logkey.Count, bad))
	}
	for _, ref := range c.refs {
		store.LoadRef(ref.id, ref.version, ref.seq)
	}
	for _, o := range c.outdated {
		if !store.LoadLost(o.Object, o.Rev) {
			r.log.Warn("unencodable cache entry of a lost events stream skipped", slog.String(logkey.ObjectID, o.ID()))
		}
	}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryMin, retryMax))
	defer q.ShutDown()
	wcfg := r.cfg.Watch
	wcfg.Settled = func() bool { return q.Len() == 0 }
	w := watch.New(r.src, store, q.Add, wcfg, r.hooks(ctx), r.log)
	r.store.Store(store)
	r.queue.Store(&q)
	r.watcher.Store(w)
	defer func() {
		r.watcher.Store(nil)
		r.queue.Store(nil)
		r.store.Store(nil)
	}()
	r.log.Info("leading", slog.Int("cached", len(objs)))
	r.m.zero(ctx, r.Kind())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := w.Run(gctx)
		q.ShutDown() // wakes the workers
		return err
	})
	t := newTerm(q, store)
	t.created = c.created
	for _, o := range unstored {
		t.unstored.add(o.id, o.seq)
		q.Add(o.id)
	}
	// Leading without the tail, this term cannot tell which of an earlier
	// term's owed writes are still owed: their floor stays for the next
	// leader.
	t.unstored.hold(c.held)
	stored := r.settleOwed(ctx, t, c.floor)
	g.Go(func() error { return r.checkKV(gctx, t) })
	g.Go(func() error { return r.keepOwed(gctx, t, stored) })
	g.Go(func() error { return r.auditKV(gctx, store, w, t) })
	g.Go(func() error { return r.watchStream(gctx, c.created) })
	for range r.cfg.Workers {
		g.Go(func() error { return r.work(gctx, store, q, t) })
	}
	return g.Wait()
}

// hooks turn what the watch loop does into metrics.
func (r *Resource[T]) hooks(ctx context.Context) watch.Hooks {
	res := r.Kind()
	return watch.Hooks{
		Reconnect: func(error, time.Duration) { r.m.reconnects.Add(ctx, 1, resAttr(res)) },
		Relist: func(n int, took time.Duration) {
			r.m.relists.Add(ctx, 1, resAttr(res))
			r.log.Debug("listed", slog.Int(logkey.Count, n), slog.Duration(logkey.Duration, took))
		},
		Unlisted: func(found, _ int) {
			if found > 0 {
				r.m.listSkipped.Add(ctx, int64(found), resAttr(res))
			}
		},
		Applied: func(d diff.Result) {
			if d.Stale > 0 {
				r.m.stale.Add(ctx, int64(d.Stale), resAttr(res))
			}
			if d.Backward > 0 {
				r.m.backward.Add(ctx, int64(d.Backward), resAttr(res))
				r.log.Debug("watch events stamped before the state they replace, applied in stream order", slog.Int(logkey.Count, d.Backward))
			}
			if d.Unknown > 0 {
				r.m.unknownDel.Add(ctx, int64(d.Unknown), resAttr(res))
			}
			if d.Bad > 0 {
				// Objects that do not encode cannot be published either.
				r.m.unpublishable.Add(ctx, int64(d.Bad), resAttr(res))
				r.log.Error("unencodable objects skipped", slog.Int(logkey.Count, d.Bad))
			}
		},
	}
}

// settleOwed writes the owed floor of the term's start over stored (what
// the key holds) before anything is published, and returns what the key
// holds then. The writes a new leader owes come from the tail, which can
// start before the old floor (TailMargin before KV's position): left at
// the old floor, they would be lost again if this term ended more than
// TailMargin later. A failed write is logged; keepOwed retries it.
func (r *Resource[T]) settleOwed(ctx context.Context, t *term, stored publish.Floor) publish.Floor {
	want := t.unstored.lowest()
	if want == stored.Seq {
		return stored
	}
	octx, cancel := context.WithTimeout(ctx, owedTimeout)
	defer cancel()
	stored, err := r.storeOwed(octx, stored, want)
	if err != nil && ctx.Err() == nil {
		r.log.Warn("owed floor write failed, retrying", slog.Uint64(logkey.Seq, want), slog.Any(logkey.Err, err))
	}
	return stored
}

// load reads the persisted cache, its owed floor (publish.ReadOwed) and
// the events stream's tail after them (catchUp), retrying until it
// succeeds or ctx ends, and makes the delete markers left by older
// informers expire. unstored are the ids whose state came from the tail:
// their KV write is owed.
//
// A cache with no entry of the resource, or whose floor is
// publish.RebuildFloor (a rebuild's writes still owed), is rebuilt from
// the stream's last event per object instead (publish.Rebuild): the
// objects bucket lost while no informer ran (deleted, purged, a NATS
// server restarted without its store) left the tail as the only record
// of what consumers have, and an object deleted from the API meanwhile
// whose last event lay before the tail was never announced as deleted.
// Why that test: it costs nothing (the load just read the bucket), a
// bucket that lost its entries is empty (the server loses or purges a
// bucket whole), and a healthy bucket is empty only while the resource
// has no object, when the stream holds one message per object deleted
// within its MaxAge to read, or none. A bucket missing some keys only is
// not detected; the KV audit of a running leader repairs that.
func (r *Resource[T]) load(ctx context.Context) (caughtUp[T], error) {
	b := &backoff.ExponentialBackOff{InitialInterval: retryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: retryMax}
	var floor publish.Floor
	var created time.Time
	l, err := backoff.Retry(ctx, func() (publish.Loaded[T], error) {
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		defer cancel()
		// Entries older than the events stream are of a stream lost
		// since (publish.LoadSince).
		var err error
		created, err = r.pub.StreamCreated(lctx)
		var l publish.Loaded[T]
		if err == nil {
			l, err = publish.LoadSince[T](lctx, r.kv, created)
		}
		if err == nil {
			floor, err = publish.ReadOwedSince[T](lctx, r.pub, created)
		}
		if err != nil {
			if gerr := r.goneError(ctx, err); gerr != nil {
				return l, backoff.Permanent(gerr)
			}
			if ctx.Err() == nil {
				r.log.Warn("load cache failed, retrying", slog.Any(logkey.Err, err))
			}
			return l, err
		}
		return l, nil
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return caughtUp[T]{}, err
	}
	b.Reset()
	rebuild := len(l.Objects) == 0 || floor.Seq == publish.RebuildFloor
	timeout, budget := tailTimeout, tailBudget
	if rebuild {
		timeout, budget = rebuildTimeout, rebuildTimeout
	}
	start := time.Now()
	c, err := backoff.Retry(ctx, func() (caughtUp[T], error) {
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := r.catchUp(tctx, l, floor.Seq, rebuild)
		if gerr := r.goneError(ctx, err); gerr != nil {
			return c, backoff.Permanent(gerr)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Warn("read the events stream's tail failed, retrying", slog.Bool("rebuild", rebuild), slog.Any(logkey.Err, err))
		}
		return c, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(budget))
	switch {
	case ctx.Err() != nil:
		return caughtUp[T]{}, ctx.Err()
	case errors.Is(err, ErrGone):
		return caughtUp[T]{}, err
	case err != nil:
		// Leading without it beats not leading: only a delete whose ADDED
		// never reached KV can go unannounced (a NATS user without the
		// consumer permissions on the events stream ends up here too);
		// after a lost bucket, every delete made meanwhile, so the floor
		// then makes the next leader rebuild.
		r.log.Error("leading without the events stream's tail", slog.Bool("rebuild", rebuild), slog.Any(logkey.Err, err))
		held := floor.Seq
		if rebuild {
			held = publish.RebuildFloor
		}
		c = caughtUp[T]{objects: l.Objects, seqs: l.Seqs, revs: l.Revs, owed: floor.Seq, held: held, outdated: l.Outdated}
	case c.rebuilt > 0:
		r.m.rebuilds.Add(ctx, 1, resAttr(r.Kind()))
		r.log.Warn("objects bucket lacks what the events stream holds: cache rebuilt from each object's last event, kv written again",
			slog.Int(logkey.Count, c.rebuilt), slog.Int("cached", len(l.Objects)), slog.Duration(logkey.Duration, time.Since(start)))
	}
	if l.Bad > 0 {
		r.log.Warn("undecodable cache entries skipped", slog.Int(logkey.Count, l.Bad))
	}
	if len(l.Outdated) > 0 {
		r.log.Warn("objects bucket entries older than the events stream (recreated since): their objects are published into it again, as deleted when the API no longer holds them",
			slog.Int(logkey.Count, len(l.Outdated)))
	}
	if len(l.Markers) > 0 {
		// Best effort: a marker left behind costs one message, not
		// correctness; the next term tries again.
		pctx, cancel := context.WithTimeout(ctx, loadTimeout)
		n, err := r.pub.PurgeMarkers(pctx, l.Markers)
		cancel()
		if err != nil {
			r.log.Warn("purge of old delete markers stopped", slog.Int(logkey.Count, n), slog.Any(logkey.Err, err))
		} else {
			r.log.Info("old delete markers set to expire", slog.Int(logkey.Count, n))
		}
	}
	c.floor = floor
	c.created = created
	return c, nil
}

// caughtUp is the cache laid over with the stream's tail.
type caughtUp[T events.APIObject] struct {
	objects []T
	// seqs are the stream sequences of objects' events, index for index
	// (0: unknown); a KV write of the object records it.
	seqs []uint64
	// revs are the revisions of objects' KV entries, index for index (0:
	// none): what the next KV write of the object expects.
	revs []uint64
	// unstored are the ids whose KV entry is behind the stream, with the
	// stream sequence of the event each owes.
	unstored []owedWrite
	// refs are the ids whose last event in the tail tells no state
	// (a reference event, over the payload limit; a replayed dead letter),
	// with the version it names and its stream sequence
	// (diff.Store.LoadRef).
	refs []refEvent
	// owed is the owed floor the objects bucket holds (0: none).
	owed uint64
	// floor is the owed floor's key as the load read it: what its first
	// write expects (publish.StoreOwed).
	floor publish.Floor
	// held is a floor this term keeps (owedWrites.hold): owed, when the
	// tail could not be read (publish.RebuildFloor for a rebuild).
	held uint64
	// rebuilt is the number of KV entries a rebuild (publish.Rebuild)
	// found missing or behind: the ids in unstored.
	rebuilt int
	// outdated are the entries older than the events stream
	// (publish.Loaded.Outdated), but those whose last event in the tail
	// is a delete (their purge is owed: unstored): states consumers of the
	// lost stream may hold (diff.Store.LoadLost).
	outdated []publish.Outdated[T]
	// created is when the events stream the load read was created: the
	// term's stream (watchStream).
	created time.Time
}

// refEvent is an object's last event that tells no state: its id, the
// version it names ("" unknown) and its stream sequence.
type refEvent struct {
	id, version string
	seq         uint64
}

// owedWrite is an id whose KV write is owed, and the stream sequence of
// the event whose state it owes.
type owedWrite struct {
	id  string
	seq uint64
}

// catchUp lays the states the events stream's tail holds over the loaded
// cache (publish.Tail, from the owed floor owed when that is earlier): the
// KV writes of the changes a previous term published last may have been
// lost with that term, and those it still owed were. With rebuild it lays
// the last event of every object over it instead (publish.Rebuild, see
// load), and records each write it owes at publish.RebuildFloor, so that
// should this term end before they landed, the next one rebuilds too.
func (r *Resource[T]) catchUp(ctx context.Context, l publish.Loaded[T], owed uint64, rebuild bool) (caughtUp[T], error) {
	var tail map[string]publish.TailState[T]
	var err error
	if rebuild {
		tail, err = publish.Rebuild[T](ctx, r.pub)
	} else {
		tail, err = publish.Tail[T](ctx, r.pub, l.Seq, owed)
	}
	if err != nil {
		return caughtUp[T]{}, err
	}
	owedAt := func(seq uint64) uint64 {
		if rebuild {
			return publish.RebuildFloor
		}
		return seq
	}
	n := len(l.Objects) + len(tail)
	c := caughtUp[T]{objects: make([]T, 0, n), seqs: make([]uint64, 0, n), revs: make([]uint64, 0, n), owed: owed}
	for i, o := range l.Objects {
		id := o.GetMetadata().GetId()
		t, ok := tail[id]
		delete(tail, id)
		// The key's entry is the loaded one, whatever state the tail
		// brings: its next write expects that revision.
		var seq, rev uint64
		if i < len(l.Seqs) {
			seq = l.Seqs[i]
		}
		if i < len(l.Revs) {
			rev = l.Revs[i]
		}
		switch {
		case !ok:
			c.objects, c.seqs, c.revs = append(c.objects, o), append(c.seqs, seq), append(c.revs, rev)
		case t.Ref:
			// Over the payload limit: KV keeps the last state that fitted,
			// and the object's next event follows the reference (nothing
			// while the object is at the version it names).
			c.objects, c.seqs, c.revs = append(c.objects, o), append(c.seqs, t.Seq), append(c.revs, rev)
			c.refs = append(c.refs, refEvent{id, t.Version, t.Seq})
		case t.Deleted:
			// The store drops the object, and with it the revision: the
			// purge expects none, and is settled after one refusal.
			c.unstored = append(c.unstored, owedWrite{id, owedAt(t.Seq)})
		default:
			c.objects, c.seqs, c.revs = append(c.objects, t.Object), append(c.seqs, t.Seq), append(c.revs, rev)
			if events.VersionOf(t.Object) != events.VersionOf(o) {
				c.unstored = append(c.unstored, owedWrite{id, owedAt(t.Seq)})
			}
		}
	}
	for _, o := range l.Outdated {
		if t, ok := tail[o.ID()]; ok && t.Deleted {
			// Consumers of this stream were told it is gone: only the
			// entry of the lost stream is left to purge.
			c.unstored = append(c.unstored, owedWrite{o.ID(), owedAt(t.Seq)})
			continue
		}
		// A state or reference the tail brings (below) wins over it in
		// the store; the entry's revision counts either way.
		c.outdated = append(c.outdated, o)
	}
	for id, t := range tail {
		switch {
		case t.Ref && t.Fitted != nil:
			// KV has no entry of it, but an earlier event carried a state
			// that fitted: what KV would keep (its write lost, or the
			// bucket), and what a delete announces.
			c.objects, c.seqs, c.revs = append(c.objects, t.Fitted), append(c.seqs, t.Seq), append(c.revs, 0)
			c.refs = append(c.refs, refEvent{id, t.Version, t.Seq})
			c.unstored = append(c.unstored, owedWrite{id, owedAt(t.Seq)})
		case t.Ref:
			// KV never held it: no state to start from, only the sequence
			// its next event follows and that consumers have it (a
			// MODIFIED, never a second ADDED).
			c.refs = append(c.refs, refEvent{id, t.Version, t.Seq})
		case !t.Deleted:
			// KV has no entry of it: its first write expects none.
			c.objects, c.seqs, c.revs = append(c.objects, t.Object), append(c.seqs, t.Seq), append(c.revs, 0)
			c.unstored = append(c.unstored, owedWrite{id, owedAt(t.Seq)})
		}
	}
	switch {
	case rebuild:
		c.rebuilt = len(c.unstored) // load reports it
	case len(c.unstored) > 0:
		r.log.Warn("cache behind the events stream: states taken from its tail, KV written again", slog.Int(logkey.Count, len(c.unstored)), slog.Uint64("cache_seq", l.Seq), slog.Uint64("owed_seq", owed))
	}
	return c, nil
}

// work publishes what the queued ids need, one id at a time per worker,
// the sample-controller way: always Done, Forget on success, retry with
// the rate limiter's delay on a failed publish, stop on a FatalError.
func (r *Resource[T]) work(ctx context.Context, store *diff.Store[T], q queue, t *term) error {
	for {
		id, shutdown := q.Get()
		if shutdown {
			return nil
		}
		if ctx.Err() != nil {
			// The term is over: what is still queued is the next leader's
			// (it diffs the same KV), not this one's.
			q.Done(id)
			return nil
		}
		requeue, err := r.sync(ctx, store, id, t)
		if requeue {
			// Queued while processing: the queue hands it out again after
			// Done, never to two workers at once.
			q.Add(id)
		}
		var fatal FatalError
		gerr := r.goneError(ctx, err)
		if errors.Is(err, ErrGone) {
			gerr = err // streamReplaced's, after a conflict
		}
		switch {
		case errors.As(err, &fatal):
			q.Done(id)
			return fmt.Errorf("%s %s: %w", events.ResourceToken(r.Kind()), id, err)
		case gerr != nil && ctx.Err() == nil:
			// Retrying cannot help: the term ends, and the next one
			// starts from the recreated stream and bucket.
			q.Done(id)
			return fmt.Errorf("%s %s: %w", events.ResourceToken(r.Kind()), id, gerr)
		case err != nil:
			if ctx.Err() == nil {
				r.m.publishErrs.Add(ctx, 1, resAttr(r.Kind()))
				r.log.Warn("publish failed, retrying", slog.String(logkey.ObjectID, id), slog.Any(logkey.Err, err), slog.Int(logkey.Attempt, q.NumRequeues(id)+1))
				q.AddRateLimited(id)
			}
		default:
			q.Forget(id)
		}
		q.Done(id)
	}
}
