package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
)

// shutdownGrace bounds one publish + KV write once shutdown began.
const shutdownGrace = 5 * time.Second

// sync publishes the change id needs, if any, and records it. A publish in
// flight when the informer shuts down may finish within shutdownGrace (the
// lease is released only after it); one in flight when the lease is lost
// stops at once, because another replica may already lead.
func (r *Resource[T]) sync(ctx context.Context, store *diff.Store[T], id string, unstored *idSet) error {
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
