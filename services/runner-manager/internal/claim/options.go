package claim

import (
	"errors"
	"fmt"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// ErrInvalidOption is returned by New for an option with an invalid value.
var ErrInvalidOption = errors.New("claims: invalid option")

// DefaultProbeTimeout bounds one probe of a runner endpoint (OwnerGone).
const DefaultProbeTimeout = time.Second

// Option adjusts New.
type Option func(*options) error

type options struct {
	markerTTL    time.Duration
	probeTimeout time.Duration
	reopen       func() <-chan struct{}
	reopenEvery  time.Duration
}

// WithMarkerTTL makes Release purge a record with a marker that expires
// after ttl (registry.WithMarkerTTL; the bucket needs LimitMarkerTTL), and
// lets ExpireMarkers give the never-expiring markers of older releases the
// same TTL. Without it, releases leave a delete marker for ever.
func WithMarkerTTL(ttl time.Duration) Option {
	return func(o *options) error {
		if ttl < registry.MinMarkerTTL {
			return fmt.Errorf("marker ttl %v: want >= %v: %w", ttl, registry.MinMarkerTTL, ErrInvalidOption)
		}
		o.markerTTL = ttl
		return nil
	}
}

// WithProbeTimeout bounds one probe of a runner endpoint (default
// DefaultProbeTimeout).
func WithProbeTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("probe timeout %v: want > 0: %w", d, ErrInvalidOption)
		}
		o.probeTimeout = d
		return nil
	}
}

// WithWatchReopen makes Watch read the bucket afresh (rebuilding the index)
// whenever a channel from next closes, and every interval when positive:
// next is meant to be the NATS connection's bus.Reconnects.Next. A peer's
// release purges its record with an expiring marker; a watch away for
// longer than the marker lived resumes after it and would keep the
// released record in the index for good (registry.WithReopen says more).
func WithWatchReopen(next func() <-chan struct{}, every time.Duration) Option {
	return func(o *options) error {
		if every < 0 {
			return fmt.Errorf("watch reopen interval %v: want >= 0: %w", every, ErrInvalidOption)
		}
		o.reopen, o.reopenEvery = next, every
		return nil
	}
}
