package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StoreGone reports whether err says for certain that a JetStream stream
// or KV bucket does not exist: deleted, or lost with a NATS server
// restarted without its JetStream store. Only the server's own answer
// tells that, so only these count:
//   - jetstream.ErrStreamNotFound, and any API error with its code 10059
//     (a stream info, a consumer created on a stream that is not there):
//     the JetStream API answered and looked the stream up;
//   - jetstream.ErrBucketNotFound: the client's KeyValue lookup got that
//     same answer for the bucket's stream.
//
// Nothing else recreates a stream or bucket its service made at start-up,
// so a caller runs that set-up again on one of these. Answers that a
// missing stream gives but a healthy one gives too for a moment are
// StoreMaybeGone instead.
func StoreGone(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return true
	}
	// ErrStreamNotFound matches by code already; kept explicit because
	// that matching is nats.go's APIError.Is, not a documented promise.
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamNotFound
}

// StoreMaybeGone reports whether err is what a missing stream or bucket
// answers but an existing one answers too, for a moment, so it alone must
// not count as StoreGone:
//   - jetstream.ErrNoStreamResponse: a publish (a KV put included) that
//     nothing answered. No stream captures its subject; or JetStream is
//     shutting down while the client is still connected (a normal NATS
//     restart stops JetStream before it closes the connections), a server
//     is still recovering its store, or a stream's leader is being elected
//     in a cluster;
//   - nats.ErrNoResponders: the same for a request (a direct get, a
//     JetStream API call).
//
// A caller confirms one before acting on it, with a lookup of the stream
// or bucket whose error is StoreGone (the informer, the runner-manager's
// bucket keeper; libs/group's heartbeats once it lasted a whole
// MEMBER_TTL while connected). Never both true with StoreGone for the same
// err unless err joins several errors.
func StoreMaybeGone(err error) bool {
	return err != nil && (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders))
}

// BucketGone looks KV bucket up, within timeout, and returns the lookup's
// error when it says the bucket does not exist (StoreGone), nil otherwise:
// found, or an answer that says nothing (no responders while a server
// restarts or a leader is elected, a timeout). How a caller confirms a
// StoreMaybeGone of the bucket.
func BucketGone(ctx context.Context, js jetstream.JetStream, bucket string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := js.KeyValue(ctx, bucket); StoreGone(err) {
		return err
	}
	return nil
}
