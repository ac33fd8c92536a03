package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
)

// ErrGone is wrapped by the error that ends a term when the events stream
// or the objects bucket no longer exists (deleted, or lost with a NATS
// server restarted without its store). Retrying the write cannot help:
// the caller recreates them (the start-up set-up) and starts a new term,
// which loads the cache again and relists.
var ErrGone = errors.New("events stream or objects bucket gone")

// goneLookupTimeout bounds the lookup that confirms an ambiguous answer:
// one small JetStream API request, answered at once by a server that
// answers at all. One that times out confirms nothing.
const goneLookupTimeout = 2 * time.Second

// goneError returns err wrapping ErrGone when it says the events stream or
// the objects bucket is gone, nil otherwise. A "not found" answer
// (bus.StoreGone) says so by itself. No responders (bus.StoreMaybeGone)
// counts only once a lookup of the stream and the bucket answers "not
// found": a normal NATS restart answers it for a moment too (JetStream
// stops before the connections close), and taking that for a lost store
// ended the term, re-ran the set-up and relisted, the informer unready
// for seconds although nothing was lost. Unconfirmed, err is retried like
// any failed write.
func (r *Resource[T]) goneError(ctx context.Context, err error) error {
	switch {
	case bus.StoreGone(err):
	case bus.StoreMaybeGone(err) && ctx.Err() == nil && r.confirmGone(ctx):
	default:
		return nil
	}
	return fmt.Errorf("%w: %w", ErrGone, err)
}

// confirmGone reports whether a lookup finds the events stream or the
// objects bucket gone. Workers that ask at the same time share one lookup
// (Publisher.Lookup), so an ambiguous answer to all of them costs one
// lookup, not one per worker, each up to goneLookupTimeout.
func (r *Resource[T]) confirmGone(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, goneLookupTimeout)
	defer cancel()
	return bus.StoreGone(r.pub.Lookup(ctx))
}

// FatalError marks an error that must stop the informer at once (the test
// hook's simulated crash between publish and KV write), as opposed to a
// failed publish, which is retried.
type FatalError struct{ Err error }

func (e FatalError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e FatalError) Unwrap() error { return e.Err }
