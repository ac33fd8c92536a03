package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
)

// shutdownGrace bounds one publish + KV write once shutdown began.
const shutdownGrace = 5 * time.Second

// term is the state of one term that outlives a single sync of an id: the
// KV writes and condition writes still owed.
type term struct {
	unstored idSet         // acked events whose KV write failed
	reports  pending[bool] // condition writes owed: id -> too large
}

// sync publishes the change id needs, if any, and records it; requeue
// reports that id changed while its event was in flight and must be synced
// again (see diff.Store.Published). A publish in
// flight when the informer shuts down may finish within shutdownGrace (the
// lease is released only after it); one in flight when the lease is lost
// stops at once, because another replica may already lead.
func (r *Resource[T]) sync(ctx context.Context, store *diff.Store[T], id string, t *term) (requeue bool, err error) {
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
	if t.unstored.has(id) {
		obj, present := store.PublishedState(id)
		if err := publish.Store(pctx, r.pub, id, obj, present); err != nil {
			return false, err
		}
		t.unstored.remove(id)
	}
	if c, ok := store.Next(id); ok {
		if requeue, err = r.publish(pctx, store, c, t); err != nil {
			return requeue, err
		}
	}
	return requeue, r.writeReport(pctx, id, t)
}

// publish publishes c and records it as published: when acked, when only
// its KV write failed (the event is in the stream), and when it can never
// be published (so it does not block the object's later changes). requeue
// is diff.Store.Published's answer.
func (r *Resource[T]) publish(ctx context.Context, store *diff.Store[T], c diff.Change[T], t *term) (requeue bool, err error) {
	out, err := publish.Publish(ctx, r.pub, c)
	log := r.log.With(slog.String(logkey.ObjectID, c.ID), slog.String(logkey.EventType, events.TypeName(c.Type)), slog.String(logkey.Version, c.Version))
	switch {
	case errors.Is(err, publish.ErrUnpublishable):
		r.m.unpublishable.Add(ctx, 1, resAttr(r.Kind()))
		log.Error("event cannot be published, version skipped", slog.Any(logkey.Err, err))
		return store.Published(c), nil
	case errors.Is(err, publish.ErrNotStored):
		// The event is in the stream: count it as published, or the next
		// change would be diffed against a state consumers never saw (a
		// second ADDED, a MODIFIED with the wrong old object).
		t.unstored.add(c.ID)
		return store.Published(c), err
	case err != nil:
		return false, err
	}
	requeue = store.Published(c)
	r.m.observeOmitted(ctx, r.Kind(), out.Omitted)
	switch {
	case out.Omitted.Object:
		log.Error("object over the event payload limit, reference event published", slog.Int("bytes", out.Omitted.Size), slog.Bool("kv_skipped", out.KVSkipped))
	case out.Omitted.Any():
		log.Info("event trimmed to the payload limit", slog.Int("bytes", out.Omitted.Size),
			slog.Bool("old_object", out.Omitted.OldObject), slog.Any("fields", out.Omitted.Fields))
	default:
		log.Debug("event published")
	}
	if r.report != nil {
		switch {
		case c.Type == eventsv1.EventType_EVENT_TYPE_DELETED:
			t.reports.remove(c.ID)
		case r.report.Needed(c.Object, out.Omitted.Object):
			t.reports.set(c.ID, out.Omitted.Object)
		default:
			t.reports.remove(c.ID)
		}
	}
	return requeue, nil
}

// writeReport writes the condition owed for id, if any. A refused write is
// dropped (logged); others are retried like a publish.
func (r *Resource[T]) writeReport(ctx context.Context, id string, t *term) error {
	tooLarge, ok := t.reports.get(id)
	if !ok || r.report == nil {
		return nil
	}
	err := r.report.Write(ctx, id, tooLarge)
	if err != nil && !r.report.Terminal(err) {
		return err
	}
	t.reports.remove(id)
	if err != nil {
		r.log.Error("condition write refused", slog.String(logkey.ObjectID, id), slog.Any(logkey.Err, err))
		return nil
	}
	r.log.Info("condition written", slog.String(logkey.ObjectID, id), slog.Bool("too_large", tooLarge))
	return nil
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

// pending maps object ids to a value owed for them, safe for concurrent
// use.
type pending[V any] struct {
	mu sync.Mutex
	m  map[string]V // guarded by mu
}

func (p *pending[V]) set(id string, v V) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]V{}
	}
	p.m[id] = v
}

func (p *pending[V]) get(id string) (V, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[id]
	return v, ok
}

func (p *pending[V]) remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, id)
}
