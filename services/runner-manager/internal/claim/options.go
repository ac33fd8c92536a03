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

// DefaultStartWait is how long a peer's record whose runner may still be
// starting (claimed, starting, or stopping) must be seen unchanged before it may be
// taken over (WithStartWait): the default start deadline
// (LOCAL_HEALTH_INTERVAL 500ms x LOCAL_HEALTH_ATTEMPTS 30) plus 5 s.
const DefaultStartWait = 20 * time.Second

// Option adjusts New.
type Option func(*options) error

type options struct {
	markerTTL    time.Duration
	probeTimeout time.Duration
	startWait    time.Duration
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

// WithStartWait sets how long this replica must have seen a peer's record
// whose runner may still be starting unchanged before OwnerGone or Scan
// may find its owner gone (default DefaultStartWait; 0 decides at once,
// as for a running runner): a claim without a runner address (state
// claimed), or one whose runner has not passed its health check (state
// starting, or stopping, which may hide a starting runner; after the wait
// its probe still decides). Its owner may be
// starting the runner while cut off from NATS, with nothing a probe could
// reach yet; it kills a runner it has not registered within its start
// deadline, or that is not healthy by its health deadline (package
// supervise), so d must exceed that deadline by what the kill may take.
func WithStartWait(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("start wait %v: want >= 0: %w", d, ErrInvalidOption)
		}
		o.startWait = d
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
