package group

import "errors"

// Sentinel errors returned by this package; match them with errors.Is.
var (
	// ErrInvalidConfig means a Config field has a value that cannot work.
	ErrInvalidConfig = errors.New("invalid consumer group config")
	// ErrGroupStopped means the underlying pcgroups consumer stopped on its
	// own (its config was deleted or became invalid, or its KV watcher
	// closed, e.g. because the NATS connection was closed), or the group's
	// streams and buckets are gone (NATS lost its store): rejoin.
	ErrGroupStopped = errors.New("consumer group stopped")
	// ErrPartitionMoved is the cause (context.Cause) of a handler ctx
	// cancelled because the message's partition moved to another member:
	// the handler should stop writing; its message is released, not
	// acked, and the new owner handles it again.
	ErrPartitionMoved = errors.New("partition moved to another member")
)

// terminalError marks an error that retrying cannot fix.
type terminalError struct{ err error }

func (e *terminalError) Error() string { return "terminal: " + e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

// Terminal marks err as one that can never succeed (bad input, a forbidden
// action): Run dead-letters the message at once instead of retrying. A nil
// err stays nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &terminalError{err: err}
}

// IsTerminal reports whether err, or any error it wraps, was marked with
// Terminal.
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}
