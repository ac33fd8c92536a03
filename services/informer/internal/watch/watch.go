package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

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
)

// errResync ends a cycle when the resync period is over.
var errResync = errors.New("resync")

// Config tunes a Watcher; zero fields take the defaults above.
type Config struct {
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	BackoffJitter  float64
	HealthyAfter   time.Duration
	// Resync starts a new cycle (relist and diff) this often; 0 disables it.
	Resync time.Duration
	// ListPasses: pages are offsets into a changing table, so a delete
	// during the list can shift an object past the page being read. When
	// deletes arrive on the watch during a list, the list is repeated (up to
	// ListPasses times) and the results merged; the deletes themselves are
	// applied afterwards from the buffer.
	ListPasses int
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
	return c
}

// Hooks report what the loop does (metrics); nil fields are skipped. They
// run on the loop's goroutine and must not block.
type Hooks struct {
	// Reconnect runs when a stream ended or failed and a new cycle follows.
	Reconnect func(err error)
	// Relist runs after each completed list with the number of objects.
	Relist func(objects int, took time.Duration)
	// Applied runs after the cache was updated.
	Applied func(r diff.Result)
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

// Run runs cycles until ctx ends, waiting with backoff between failed ones;
// it returns nil when ctx ends.
func (w *Watcher[T]) Run(ctx context.Context) error {
	b := newBackoff(w.cfg)
	for {
		start := time.Now()
		received, err := w.cycle(ctx)
		w.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResync) {
			w.log.Debug("periodic resync")
			continue
		}
		// A stream that delivered events or stayed up long enough was
		// healthy: the next failure starts over at the initial delay.
		if received > 0 || time.Since(start) >= w.cfg.HealthyAfter {
			b.Reset()
		}
		if w.hooks.Reconnect != nil {
			w.hooks.Reconnect(err)
		}
		d := b.NextBackOff()
		if errors.Is(err, io.EOF) {
			w.log.Info("watch stream ended, reconnecting", slog.Duration(logkey.Duration, d))
		} else {
			w.log.Warn("watch failed, reconnecting", slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, d))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// cycle opens the stream, lists, syncs and applies live events until the
// stream ends, the resync period is over, or ctx ends. It returns how many
// events the stream delivered and why it ended.
func (w *Watcher[T]) cycle(ctx context.Context) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
	start := time.Now()
	listed, err := w.list(ctx, buf)
	if err != nil {
		return err
	}
	if w.hooks.Relist != nil {
		w.hooks.Relist(len(listed), time.Since(start))
	}
	evs, _, _ := buf.take()
	r := w.store.Sync(listed, w.observe(evs))
	w.publish(r)
	w.synced.Add(1)
	w.connected.Store(true)
	w.log.Debug("synced", slog.Int(logkey.Count, len(listed)), slog.Int("buffered", len(evs)), slog.Int("dirty", len(r.Dirty)))

	var resync <-chan time.Time
	if w.cfg.Resync > 0 {
		t := time.NewTimer(w.cfg.Resync)
		defer t.Stop()
		resync = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-resync:
			return errResync
		case <-buf.ready:
		}
		evs, ended, err := buf.take()
		for _, ob := range w.observe(evs) {
			w.publish(w.store.Apply(ob))
		}
		if ended {
			if err == nil {
				err = io.EOF
			}
			return err
		}
	}
}

// list lists until a pass saw no delete on the watch (see
// Config.ListPasses), merging passes; newer states win.
func (w *Watcher[T]) list(ctx context.Context, buf *buffer[T]) ([]T, error) {
	var merged map[string]T
	var out []T
	for pass := 1; ; pass++ {
		_, before := buf.counts()
		items, err := w.src.List(ctx)
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		for _, o := range items {
			diff.Normalize(o)
		}
		_, after := buf.counts()
		if merged == nil {
			if after == before || pass >= w.cfg.ListPasses {
				return items, nil
			}
			merged = make(map[string]T, len(items))
		}
		for _, o := range items {
			id := diff.ID(o)
			if cur, ok := merged[id]; !ok || !diff.UpdatedAt(o).Before(diff.UpdatedAt(cur)) {
				merged[id] = o
			}
		}
		if after == before || pass >= w.cfg.ListPasses {
			out = make([]T, 0, len(merged))
			for _, o := range merged {
				out = append(out, o)
			}
			return out, nil
		}
		w.log.Debug("deletes during list, listing again", slog.Int(logkey.Attempt, pass))
	}
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
