package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultStreamCheck is how often a leader looks whether the events
// stream it publishes into is still the one its term started on
// (Config.StreamCheck, watchStream): one small JetStream API request per
// resource.
const DefaultStreamCheck = 5 * time.Second

// errStreamReplaced is wrapped (with ErrGone) by the error that ends a
// term whose events stream was deleted and created again under it.
var errStreamReplaced = errors.New("events stream created again since the term started")

// watchStream ends the term, with an error wrapping ErrGone, once the
// events stream is not the one the term started on (created at created,
// publish.Publisher.StreamCreated), or nil when ctx ends. It looks every
// Config.StreamCheck (0: never; a conflict still looks, see publish),
// whatever KV_AUDIT_INTERVAL says.
//
// Why: every replica's start-up set-up creates the events stream when it
// is missing (bus.EnsureStream). A stream lost while this replica leads
// and created again by a standby's start-up, or by an operator, before
// this leader publishes anything, never answers a publish with "not
// found": the term went on publishing only what changes into it, and the
// objects that did not change were never announced there, so a consumer
// group created on it, or rebuilding from it, missed them. A new term
// loads the cache against the new stream (publish.LoadSince) and
// announces every object again.
func (r *Resource[T]) watchStream(ctx context.Context, created time.Time) error {
	if r.cfg.StreamCheck <= 0 {
		return nil
	}
	tk := time.NewTicker(r.cfg.StreamCheck)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		if err := r.streamReplaced(ctx, created); err != nil {
			return err
		}
	}
}

// streamReplaced returns an error wrapping ErrGone when the events stream
// is gone or was created after created (see watchStream), nil otherwise,
// also when the lookup fails (the next check, or the next publish, tells).
func (r *Resource[T]) streamReplaced(ctx context.Context, created time.Time) error {
	lctx, cancel := context.WithTimeout(ctx, goneLookupTimeout)
	defer cancel()
	now, err := r.pub.StreamCreated(lctx)
	switch {
	case err != nil:
		if gerr := r.goneError(ctx, err); gerr != nil && ctx.Err() == nil {
			return gerr
		}
		return nil
	case now.Equal(created):
		return nil
	}
	r.log.Warn("events stream created again under this term: starting a new term to announce every object in it",
		slog.Time("term_stream_created", created), slog.Time("stream_created", now))
	return fmt.Errorf("%w: %w (created %s, the term's %s)", ErrGone, errStreamReplaced, now.Format(time.RFC3339Nano), created.Format(time.RFC3339Nano))
}
