package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Transient reports whether err, met under ctx, is what JetStream answers
// for a moment rather than for good: no responders (a stream or bucket
// created a moment ago has no leader yet, or the server is still
// starting), the cluster answering that it is temporarily unavailable (no
// meta leader during an election), a request timing out while ctx itself
// is still live (a busy cluster placing an R3 asset), or the connection
// being re-established.
func Transient(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jsClusterNotAvailable
}

// jsClusterNotAvailable is the server's "JetStream system temporarily
// unavailable"; nats.go names no constant for it.
const jsClusterNotAvailable jetstream.ErrorCode = 10008

// Retry of transient errors (see retryTransient): from retryMin, doubling
// to retryMax, +/-25 %.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// attemptTimeout bounds one attempt of retryTransient: nats.go's own
// default for a JetStream API request without a deadline. A caller's longer
// deadline must not be spent on one request: one sent before a cluster's
// meta leader is elected is never answered.
const attemptTimeout = 5 * time.Second

// retryTransient calls op until it succeeds, fails for good (an error that
// is not Transient) or ctx ends, each attempt bounded by attemptTimeout.
// Start-up used to exit 1 on the first timeout while a busy JetStream
// cluster was still placing an R3 stream, and the pod's restarts then
// looked like a crash loop.
func retryTransient[T any](ctx context.Context, op func(ctx context.Context) (T, error)) (T, error) {
	attempts := 0
	b := &backoff.ExponentialBackOff{InitialInterval: retryMin, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: retryMax}
	v, err := backoff.Retry(ctx, func() (T, error) {
		attempts++
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		v, err := op(actx)
		if err != nil && !Transient(ctx, err) {
			return v, backoff.Permanent(err)
		}
		return v, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
	if err != nil && attempts > 1 {
		err = fmt.Errorf("after %d attempts: %w", attempts, err)
	}
	return v, err
}
