package controller

import (
	"context"
	"errors"
	"fmt"
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

// kvWindow bounds the KV writes in flight per resource: a worker whose
// write would exceed it waits (nats.go's own limit of async publishes is
// 4,000 per connection, shared by the three resources).
const kvWindow = 1024

// term is the state of one term that outlives a single sync of an id: the
// KV writes in flight and the KV and condition writes still owed.
type term struct {
	q        queue
	revs     *publish.Revs // the objects bucket's revisions and puts in flight
	unstored *owedWrites   // acked events whose KV write failed
	reports  pending[bool] // condition writes owed: id -> too large
	// kv carries the KV writes in flight to checkKV, in the order they
	// were sent; its capacity is kvWindow.
	kv chan kvWrite
	// created is when the events stream the term started on was created
	// (watchStream).
	created time.Time
}

// kvWrite is one KV write in flight.
type kvWrite struct {
	id  string
	seq uint64 // the stream sequence of the event it records
	put *publish.Put
}

// newTerm returns the state of a term whose KV revisions revs knows
// (the term's store).
func newTerm(q queue, revs publish.Revisions) *term {
	return &term{q: q, revs: publish.NewRevs(revs), unstored: newOwedWrites(), kv: make(chan kvWrite, kvWindow)}
}

// checkKV waits for the KV writes in flight, in order, until ctx ends. A
// failed one makes the id owe its KV write (retried before its next change,
// like a synchronous failure), and queues the id; so does one the bucket
// refused for a wrong last revision (the retry settles it: see
// publish.Store). An object's next write may have awaited the ack first
// (publish.Put). Writes still in flight when the term ends are not waited
// for: whichever were lost, the next leader diffs against what KV holds.
func (r *Resource[T]) checkKV(ctx context.Context, t *term) error {
	for {
		var w kvWrite
		select {
		case <-ctx.Done():
			return nil
		case w = <-t.kv:
		}
		if err := w.put.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if gerr := r.goneError(ctx, err); gerr != nil {
				return fmt.Errorf("kv write of %s: %w", w.id, gerr)
			}
			t.unstored.add(w.id, w.seq)
			r.m.publishErrs.Add(ctx, 1, resAttr(r.Kind()))
			r.log.Warn("kv write failed, retrying", slog.String(logkey.ObjectID, w.id), slog.Any(logkey.Err, err))
			t.q.AddRateLimited(w.id)
		}
	}
}

// sync publishes the change id needs, if any, and records it; requeue
// reports that id changed while its event was in flight and must be synced
// again (see diff.Store.Published). A publish in
// flight when the informer shuts down may finish within shutdownGrace (the
// lease is released only after it); one in flight when the lease is lost
// stops at once, because another replica may already lead.
func (r *Resource[T]) sync(ctx context.Context, store *diff.Store[T], id string, t *term) (requeue bool, err error) {
	// One deadline for everything below (the publish uses it as is).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publish.DefaultTimeout)
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
		state, seq, present := store.PublishedSeq(id)
		if err := publish.Store[T](pctx, r.pub, t.revs, id, state, seq, present); err != nil {
			return false, err
		}
		t.unstored.remove(id)
	}
	if c, ok := store.Next(id); ok {
		if c.Announced {
			requeue = r.announced(store, c, t)
		} else if requeue, err = r.publish(pctx, store, c, t); err != nil {
			return requeue, err
		}
	}
	return requeue, r.writeReport(pctx, id, t)
}

// publish publishes c and records it as published: when acked, when only
// its KV write failed (the event is in the stream), and when it can never
// be published (so it does not block the object's later changes). requeue
// is diff.Store.Published's answer.
//
// When the stream's last event of the object is another one than c
// expects (publish.ConflictError: the lease was reconfirmed, so no
// successor published it), that event becomes the object's published
// state (adopt) and the change then needed is published, once; a second
// conflict is returned like any failed publish, and retried.
func (r *Resource[T]) publish(ctx context.Context, store *diff.Store[T], c diff.Change[T], t *term) (requeue bool, err error) {
	out, err := r.publishOnce(ctx, c, t)
	if conflict := (*publish.ConflictError)(nil); errors.As(err, &conflict) {
		if conflict.Last == 0 && c.Seq > 0 {
			// The subject lost every message, the one expected too: aged
			// out or purged, or the stream was created again under this
			// term. The last calls for a new term (watchStream), now
			// rather than at the next check.
			if gerr := r.streamReplaced(ctx, t.created); gerr != nil {
				return false, gerr
			}
		}
		known := r.adopt(store, c, conflict)
		next, ok := store.Next(c.ID)
		if ok && next.Announced {
			return r.announced(store, next, t), nil
		}
		if !ok {
			if !known {
				return false, nil
			}
			// Consumers saw what the API holds: only KV may lag.
			t.unstored.add(c.ID, conflict.Last)
			return true, nil
		}
		c = next
		out, err = r.publishOnce(ctx, c, t)
		if known && err != nil && !errors.Is(err, publish.ErrNotStored) && !errors.Is(err, publish.ErrUnpublishable) {
			// KV lags the adopted state until a publish of the object
			// writes it; should this term end first, the owed write
			// makes the next leader read the stream from there.
			t.unstored.add(c.ID, conflict.Last)
		}
	}
	switch {
	case errors.Is(err, publish.ErrUnpublishable):
		r.m.unpublishable.Add(ctx, 1, resAttr(r.Kind()))
		r.log.Error("event cannot be published, version skipped", r.changeAttrs(c, slog.Any(logkey.Err, err))...)
		return store.Published(c), nil
	case errors.Is(err, publish.ErrNotStored):
		// The event is in the stream: count it as published, or the next
		// change would be diffed against a state consumers never saw (a
		// second ADDED, a MODIFIED with the wrong old object).
		t.unstored.add(c.ID, out.Seq)
		return store.PublishedAt(c, out.Seq), err
	case err != nil:
		return false, err
	}
	requeue = store.PublishedAt(c, out.Seq)
	if out.KV != nil {
		select {
		case t.kv <- kvWrite{id: c.ID, seq: out.Seq, put: out.KV}:
		case <-ctx.Done():
			// The term is over before the write could be tracked: the next
			// leader diffs against what KV holds.
		}
	}
	switch {
	case out.Omitted.Object:
		r.m.observeOmitted(ctx, r.Kind(), out.Omitted)
		r.log.Error("object over the event payload limit, reference event published",
			r.changeAttrs(c, slog.Int("bytes", out.Omitted.Size), slog.Bool("kv_skipped", out.KVSkipped))...)
	case out.Omitted.Any():
		r.m.observeOmitted(ctx, r.Kind(), out.Omitted)
		r.log.Info("event trimmed to the payload limit",
			r.changeAttrs(c, slog.Int("bytes", out.Omitted.Size), slog.Bool("old_object", out.Omitted.OldObject), slog.Any("fields", out.Omitted.Fields))...)
	case r.log.Enabled(ctx, slog.LevelDebug):
		r.log.Debug("event published", r.changeAttrs(c)...)
	}
	if r.report != nil {
		switch {
		case c.Type == eventsv1.EventType_EVENT_TYPE_DELETED:
			t.reports.remove(c.ID)
		case r.report.Needed(c, out.Omitted.Object):
			t.reports.set(c.ID, out.Omitted.Object)
		default:
			t.reports.remove(c.ID)
		}
	}
	return requeue, nil
}

// announced records c, the version the object's last event (a reference
// event) named, as published without publishing it again, and owes the
// condition that event called for (the previous leader may have ended
// before writing it). requeue is diff.Store.Published's answer.
func (r *Resource[T]) announced(store *diff.Store[T], c diff.Change[T], t *term) (requeue bool) {
	requeue = store.PublishedAt(c, 0)
	if r.report != nil && r.report.Needed(c, true) {
		t.reports.set(c.ID, true)
	}
	r.log.Debug("version already announced by a reference event, not published again", r.changeAttrs(c, slog.Uint64(logkey.Seq, c.Seq))...)
	return requeue
}

// publishOnce is publish.Publish, counting and logging a conflict.
func (r *Resource[T]) publishOnce(ctx context.Context, c diff.Change[T], t *term) (publish.Outcome, error) {
	out, err := publish.Publish(ctx, r.pub, t.revs, c)
	switch {
	case out.LostAck:
		r.m.conflicts.Add(ctx, 1, resAttr(r.Kind()))
		r.log.Info("event already in the stream (its ack was lost), counted as published",
			r.changeAttrs(c, slog.Uint64("expected_seq", c.Seq), slog.Uint64(logkey.Seq, out.Seq))...)
	case errors.Is(err, publish.ErrConflict):
		r.m.conflicts.Add(ctx, 1, resAttr(r.Kind()))
		r.log.Warn("event refused: the object's last event in the stream is not the expected one",
			r.changeAttrs(c, slog.Uint64("expected_seq", c.Seq), slog.Any(logkey.Err, err))...)
	}
	return out, err
}

// adopt makes the object's last event in the stream (conflict) the
// published state of c's object, or only its sequence when the event
// tells no state (and, for a reference event, the version it names); it
// reports whether it told a state.
func (r *Resource[T]) adopt(store *diff.Store[T], c diff.Change[T], conflict *publish.ConflictError) bool {
	last := publish.Last[T](conflict, c.ID)
	switch last.Kind {
	case publish.LastPresent:
		store.Adopt(c.ID, last.State, conflict.Last)
	case publish.LastDeleted:
		store.Adopt(c.ID, events.Encoded{}, conflict.Last)
	case publish.LastRef:
		store.AdoptRef(c.ID, last.Version, conflict.Last)
		return false
	default:
		store.AdoptSeq(c.ID, conflict.Last)
		return false
	}
	return true
}

// changeAttrs are the log attributes of c, then extra; built only when a
// line is written, not per publish.
func (r *Resource[T]) changeAttrs(c diff.Change[T], extra ...any) []any {
	return append([]any{slog.String(logkey.ObjectID, c.ID), slog.String(logkey.EventType, events.TypeName(c.Type)), slog.String(logkey.Version, c.Version())}, extra...)
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
