// Package natsgone tells the JetStream errors that mean the informer's
// stream or one of its buckets no longer exists (deleted, or lost with a
// NATS server restarted without its JetStream store) from the passing
// failures of a NATS outage. Nothing else recreates them: the informer
// runs its start-up set-up again when an operation fails with one.
package natsgone

import (
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Is reports whether err says that a stream or bucket the operation needed
// does not exist: the server answered "stream not found" (10059), the
// client found no bucket, or nothing answered on the stream's subject (a
// publish, a KV write or a direct get with no stream behind its subject
// gets no responders; a server still starting JetStream too, for which the
// set-up then retries until it answers).
func Is(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamNotFound
}
