package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// Defaults of Config.
const (
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 30 * time.Second
	DefaultBackoffJitter  = 0.25
	// DefaultHealthyAfter: a stream that lived this long counts as healthy
	// (the backoff resets) even if it delivered nothing.
	DefaultHealthyAfter = 60 * time.Second
	// DefaultListPasses bounds the lists of one cycle (see Config.ListPasses).
	DefaultListPasses = 3
	// DefaultConfirmAfter: see Config.ConfirmAfter.
	DefaultConfirmAfter = 5 * time.Second
	// DefaultProbeInterval: see Config.ProbeInterval.
	DefaultProbeInterval = time.Second
)

// Config tunes a Watcher; zero fields take the defaults above.
type Config struct {
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	BackoffJitter  float64
	HealthyAfter   time.Duration
	// Resync relists and diffs this often on the open stream; 0 disables
	// it.
	Resync time.Duration
	// ConfirmAfter bounds the wait for the confirming relist of a cycle.
	// The server registers a watch some time after the client opened it and
	// sends nothing (not even headers) before the first event, so a change
	// made between the first list and that registration is on neither. The
	// first event proves the registration: the cycle then lists again at
	// once. A quiet stream proves nothing: the cycle lists again after
	// ConfirmAfter, by when any server has registered it. Not needed when
	// an event arrived before the first list started.
	ConfirmAfter time.Duration
	// Settled, when set, reports whether the changes of the last list are
	// published (the work queue is empty). A confirming list due after
	// ConfirmAfter waits for it, so that on a quiet stream it does not
	// compete with publishing the first list's backlog (100,000 objects at
	// start); the wait ends at 10 x ConfirmAfter in any case.
	Settled func() bool
	// ListPasses: pages are offsets into a changing table, so an update or
	// delete during the list can shift an object past the page being read
	// (movesRows). When such changes arrive on the watch during a list, the
	// list is repeated (up to ListPasses times) and the results merged; the
	// changes themselves are applied from the buffer. A cached object that
	// every pass missed is read by id before it counts as deleted
	// (confirmUnlisted).
	ListPasses int
	// ProbeInterval is how often a backoff wait asks the API whether it
	// answers (Source.Probe), at most one probe at a time (see
	// Watcher.wait). A wait no longer than it does not probe.
	ProbeInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.BackoffInitial <= 0 {
		c.BackoffInitial = DefaultBackoffInitial
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffJitter == 0 {
		c.BackoffJitter = DefaultBackoffJitter
	}
	if c.HealthyAfter <= 0 {
		c.HealthyAfter = DefaultHealthyAfter
	}
	if c.ListPasses <= 0 {
		c.ListPasses = DefaultListPasses
	}
	if c.ConfirmAfter <= 0 {
		c.ConfirmAfter = DefaultConfirmAfter
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	return c
}

// Hooks report what the loop does (metrics); nil fields are skipped. They
// run on the loop's goroutine and must not block.
type Hooks struct {
	// Reconnect runs when a stream ended or failed and a new cycle follows
	// after wait (the backoff).
	Reconnect func(err error, wait time.Duration)
	// Relist runs after each completed list (first, confirming, periodic)
	// with the number of objects.
	Relist func(objects int, took time.Duration)
	// Applied runs after the cache was updated.
	Applied func(r diff.Result)
	// Unlisted runs after a list missed cached objects, with how many a
	// read by id found (the pages skipped them) and how many are gone.
	Unlisted func(found, gone int)
}

// Watcher keeps one resource's cache in step with the API. Run it once.
type Watcher[T events.APIObject] struct {
	src       Source[T]
	store     *diff.Store[T]
	enqueue   func(id string)
	cfg       Config
	hooks     Hooks
	log       *slog.Logger
	connected atomic.Bool
	synced    atomic.Int64 // completed syncs
}

// New returns a Watcher that feeds store from src and calls enqueue for
// every id that needs publishing. enqueue must not block. log should carry
// the resource already.
func New[T events.APIObject](src Source[T], store *diff.Store[T], enqueue func(id string), cfg Config, hooks Hooks, log *slog.Logger) *Watcher[T] {
	return &Watcher[T]{
		src: src, store: store, enqueue: enqueue, cfg: cfg.withDefaults(), hooks: hooks, log: log,
	}
}

// Connected reports whether the watch stream is open and the cache synced.
func (w *Watcher[T]) Connected() bool { return w.connected.Load() }

// Syncs returns how many list+diff cycles completed.
func (w *Watcher[T]) Syncs() int64 { return w.synced.Load() }

// Run runs cycles until ctx ends, waiting with backoff between failed ones
// (cut short when the API answers again, see wait); it returns nil when ctx
// ends.
func (w *Watcher[T]) Run(ctx context.Context) error {
	b := newBackoff(w.cfg)
	// down is the outcome of the last probe: the API did not answer. It
	// carries over from one wait to the next, so an API that comes back
	// between a failed cycle and the next wait's first probe still counts
	// as back.
	down := false
	for {
		start, syncs := time.Now(), w.synced.Load()
		received, err := w.cycle(ctx)
		w.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		// A cycle that synced, and whose stream then delivered events or
		// stayed up long enough, was healthy: the next failure starts over
		// at the initial delay. Events alone prove nothing: on a busy API
		// whose list keeps failing every stream delivers some before the
		// list fails, and that must back off like any other failure.
		if w.synced.Load() > syncs && (received > 0 || time.Since(start) >= w.cfg.HealthyAfter) {
			b.Reset()
		}
		d := b.NextBackOff()
		if w.hooks.Reconnect != nil {
			w.hooks.Reconnect(err, d)
		}
		if errors.Is(err, io.EOF) {
			w.log.Info("watch stream ended, reconnecting", slog.Duration(logkey.Duration, d))
		} else {
			w.log.Warn("watch failed, reconnecting", slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, d))
		}
		if !w.wait(ctx, d, &down) {
			return nil
		}
	}
}

// probeTimeout bounds one probe (Source.Probe). Longer than the probe
// interval on purpose: a loaded API that answers its health check slowly
// is not down, and taking it for down would make its next quick answer
// cut the backoff short.
const probeTimeout = 5 * time.Second

// wait waits d before the next cycle and reports whether ctx is still
// live. While it waits it probes the API every ProbeInterval, and ends
// early when a probe answers after one that did not (*down): the API was
// down and is back, and the backoff, grown to its cap during a long
// outage, would only delay the relist that brings consumers the changes
// they missed. It ends early only on that transition, never because a
// probe answers: an API that answers its health check while the watch or
// the list keeps failing is retried on the backoff, not every interval.
// A probe costs one health check (no token, no database), at most one in
// flight, each bounded by probeTimeout and by the end of the wait.
func (w *Watcher[T]) wait(ctx context.Context, d time.Duration, down *bool) bool {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var probe <-chan time.Time
	if w.src.Probe != nil && d > w.cfg.ProbeInterval {
		tk := time.NewTicker(w.cfg.ProbeInterval)
		defer tk.Stop()
		probe = tk.C
	}
	for {
		select {
		case <-wctx.Done():
			return ctx.Err() == nil
		case <-probe:
		}
		pctx, pcancel := context.WithTimeout(wctx, probeTimeout)
		err := w.src.Probe(pctx)
		pcancel()
		if wctx.Err() != nil {
			return ctx.Err() == nil // the wait is over: the probe proves nothing
		}
		was := *down
		*down = err != nil
		if was && err == nil {
			w.log.Info("api answers again, reconnecting before the backoff ends")
			return true
		}
	}
}

// cycle opens the stream, lists, syncs and applies live events until the
// stream ends, the resync period is over, or ctx ends. It returns how many
// events the stream delivered and why it ended.
func (w *Watcher[T]) cycle(ctx context.Context) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The server reads this stream's events after every list so far ended
	// and after the last stream's events arrived: they replace those
	// states whatever their updated_at (diff.Store.StreamOpened).
	w.store.StreamOpened()
	stream, err := w.src.Watch(ctx)
	if err != nil {
		return 0, fmt.Errorf("open watch: %w", err)
	}
	buf := newBuffer[T]()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for {
			ev, err := stream.Recv()
			if err != nil {
				buf.end(err)
				return nil
			}
			buf.push(ev)
		}
	})
	err = w.syncAndFollow(gctx, buf)
	cancel()     // ends the stream, so Recv returns
	_ = g.Wait() // the receive goroutine reports through buf, never an error
	total, _ := buf.counts()
	return total, err
}

func (w *Watcher[T]) syncAndFollow(ctx context.Context, buf *buffer[T]) error {
	// An event before the list proves the server registered the stream
	// before the list began: the list and the stream then miss nothing.
	early, _ := buf.counts()
	if err := w.relist(ctx, buf); err != nil {
		return err
	}
	w.connected.Store(true)
	synced := time.Now()

	var confirm <-chan time.Time
	switch received, _ := buf.counts(); {
	case early > 0:
	case received > 0:
		// Registered, but maybe only during the list.
		if err := w.relist(ctx, buf); err != nil {
			return err
		}
	default:
		t := time.NewTimer(w.cfg.ConfirmAfter)
		defer t.Stop()
		confirm = t.C
	}
	var resync <-chan time.Time
	if w.cfg.Resync > 0 {
		t := time.NewTicker(w.cfg.Resync)
		defer t.Stop()
		resync = t.C
	}
	for {
		again := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-resync:
			w.log.Debug("periodic resync")
			again = true
		case <-confirm:
			if w.cfg.Settled != nil && !w.cfg.Settled() && time.Since(synced) < 10*w.cfg.ConfirmAfter {
				confirm = time.After(w.cfg.ConfirmAfter / 5)
				continue
			}
			confirm, again = nil, true
		case <-buf.ready:
			evs, ended, err := buf.take()
			w.applyLive(evs)
			if ended {
				if err == nil {
					err = io.EOF
				}
				return err
			}
			if confirm != nil && len(evs) > 0 {
				confirm, again = nil, true
			}
		}
		if again {
			if err := w.relist(ctx, buf); err != nil {
				return err
			}
		}
	}
}

// relist lists while the stream keeps buffering, page by page into a
// diff.Listing (encoded as they come, so the decoded list is never held
// whole), applying the events buffered meanwhile between pages, then hands
// the list and the last events to the cache in one step. Events buffered
// before the list are applied first.
func (w *Watcher[T]) relist(ctx context.Context, buf *buffer[T]) error {
	pending, _, _ := buf.take()
	w.applyLive(pending)
	start := time.Now()
	l := w.store.StartList()
	n, err := w.list(ctx, buf, l)
	if err != nil {
		return err // an unfinished listing changes nothing
	}
	if err := w.confirmUnlisted(ctx, l); err != nil {
		return err
	}
	if w.hooks.Relist != nil {
		w.hooks.Relist(n, time.Since(start))
	}
	evs, _, _ := buf.take()
	r := l.Finish(w.observe(evs))
	w.publish(r)
	w.synced.Add(1)
	w.log.Debug("synced", slog.Int(logkey.Count, n), slog.Int("buffered", len(evs)), slog.Int("dirty", len(r.Dirty)))
	return nil
}

// applyLive applies live watch events one by one.
func (w *Watcher[T]) applyLive(evs []Event[T]) {
	for _, ob := range w.observe(evs) {
		w.publish(w.store.Apply(ob))
	}
}

// list lists into l until a pass saw no update or delete on the watch (see
// Config.ListPasses); a second pass merges into the first, newer states
// winning. It returns how many objects the last pass listed.
func (w *Watcher[T]) list(ctx context.Context, buf *buffer[T], l *diff.Listing[T]) (int, error) {
	for pass := 1; ; pass++ {
		_, before := buf.counts()
		n := 0
		err := w.src.Pages(ctx, func(items []T, total int) error {
			if pass == 1 && n == 0 {
				l.Expect(total, len(items))
			}
			for _, o := range items {
				diff.Normalize(o)
			}
			n += len(items)
			l.Add(items)
			// The events of the list's time go to the cache (and out) between
			// pages instead of after the whole list: a relist of 100,000
			// objects takes seconds, every reconnect and RESYNC_PERIOD. The
			// listing lets them win over its older pages (diff.Listing).
			if evs, _, _ := buf.take(); len(evs) > 0 {
				w.applyLive(evs)
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("list: %w", err)
		}
		if _, after := buf.counts(); after == before || pass >= w.cfg.ListPasses {
			return n, nil
		}
		w.log.Debug("changes during list, listing again", slog.Int(logkey.Attempt, pass))
	}
}

// confirmReads bounds the reads by id of one relist that run at once
// (confirmUnlisted). After a restart, every object deleted while no
// informer watched is read once; one at a time, that is one API round trip
// each before any of their deletes is published (20,000 deletes at 3 ms a
// read: a minute).
const confirmReads = 8

// readTries is how often confirmUnlisted reads an object by id before the
// relist fails: after a long downtime a relist reads thousands, and one
// passing error (a timeout) failed it whole, each retry reading them all
// again.
const readTries = 3

// readRetry is the first wait before reading an object by id again.
const readRetry = 100 * time.Millisecond

// readByID is Source.Get, tried readTries times with a short backoff.
func (w *Watcher[T]) readByID(ctx context.Context, id string) (T, bool, error) {
	type read struct {
		o  T
		ok bool
	}
	r, err := backoff.Retry(ctx, func() (read, error) {
		o, ok, err := w.src.Get(ctx, id)
		return read{o, ok}, err
	}, backoff.WithBackOff(&backoff.ExponentialBackOff{InitialInterval: readRetry, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: 4 * readRetry}),
		backoff.WithMaxTries(readTries))
	return r.o, r.ok, err
}

// confirmUnlisted reads by id each cached object the listing did not show,
// up to confirmReads at a time, and adds those the server still has. An
// object missing from the pages is not proof of a delete: the real server
// pages by offset through a table whose order every update and delete
// changes, so under steady changes an object that exists can slip past
// every pass (movesRows). Published as deleted, it would cost its custom
// resource or its runner. One read per missing object: the deletes made
// while no stream watched, plus the skips.
func (w *Watcher[T]) confirmUnlisted(ctx context.Context, l *diff.Listing[T]) error {
	if w.src.Get == nil {
		return nil
	}
	ids := l.Unlisted()
	if len(ids) == 0 {
		return nil
	}
	read := make([]T, len(ids))
	exists := make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(confirmReads)
	for i, id := range ids {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another read failed: the relist fails anyway
			}
			o, ok, err := w.readByID(gctx, id)
			if err != nil {
				return fmt.Errorf("confirm unlisted: %w", err)
			}
			read[i], exists[i] = o, ok
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var found []T
	for i, ok := range exists {
		if ok {
			diff.Normalize(read[i])
			found = append(found, read[i])
		}
	}
	if len(found) > 0 {
		l.Add(found)
	}
	if w.hooks.Unlisted != nil {
		w.hooks.Unlisted(len(found), len(ids)-len(found))
	}
	w.log.Debug("confirmed unlisted objects", slog.Int("found", len(found)), slog.Int("gone", len(ids)-len(found)))
	return nil
}

// observe converts watch events for the cache, normalizing timestamps and
// skipping events the API should never send.
func (w *Watcher[T]) observe(evs []Event[T]) []diff.Observed[T] {
	out := make([]diff.Observed[T], 0, len(evs))
	for _, ev := range evs {
		switch ev.Type {
		case ambientv1.EventType_EVENT_TYPE_DELETED:
			if ev.ID == "" {
				continue
			}
			out = append(out, diff.Observed[T]{ID: ev.ID, Deleted: true})
		case ambientv1.EventType_EVENT_TYPE_CREATED, ambientv1.EventType_EVENT_TYPE_UPDATED:
			if ev.Object.GetMetadata().GetId() == "" {
				w.log.Warn("watch event without object, ignored", slog.String("type", ev.Type.String()))
				continue
			}
			diff.Normalize(ev.Object)
			out = append(out, diff.Observed[T]{ID: ev.ID, Object: ev.Object})
		default:
			w.log.Warn("watch event of unknown type, ignored", slog.String("type", ev.Type.String()))
		}
	}
	return out
}

func (w *Watcher[T]) publish(r diff.Result) {
	for _, id := range r.Dirty {
		w.enqueue(id)
	}
	if w.hooks.Applied != nil {
		w.hooks.Applied(r)
	}
}
