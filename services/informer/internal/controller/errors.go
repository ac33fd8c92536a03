package controller

import (
	"errors"
	"fmt"

	"github.com/ambient-code/control-plane/services/informer/internal/natsgone"
)

// ErrGone is wrapped by the error that ends a term when the events stream
// or the objects bucket no longer exists (natsgone.Is: deleted, or lost
// with a NATS server restarted without its store). Retrying the write
// cannot help: the caller recreates them (the start-up set-up) and starts
// a new term, which loads the cache again and relists.
var ErrGone = errors.New("events stream or objects bucket gone")

// goneError returns err wrapping ErrGone when it says a stream or bucket is
// gone, nil otherwise.
func goneError(err error) error {
	if !natsgone.Is(err) {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrGone, err)
}

// FatalError marks an error that must stop the informer at once (the test
// hook's simulated crash between publish and KV write), as opposed to a
// failed publish, which is retried.
type FatalError struct{ Err error }

func (e FatalError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e FatalError) Unwrap() error { return e.Err }
