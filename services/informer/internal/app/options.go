package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/controller"
)

// ErrInvalidOption is wrapped by options that reject their value.
var ErrInvalidOption = errors.New("invalid option")

// Option adjusts Run for tests and the build; production needs none.
type Option func(*options) error

type options struct {
	version      string
	afterPublish func(ctx context.Context, ev *eventsv1.ResourceEvent) error
	healthyAfter time.Duration
	tailMargin   uint64
	listening    func(addr net.Addr)
	leaseClock   func() time.Time
	streamCheck  time.Duration
}

// newOptions applies opts to the defaults.
func newOptions(opts []Option) (options, error) {
	o := options{version: "dev", streamCheck: controller.DefaultStreamCheck}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return options{}, err
		}
	}
	return o, nil
}

// WithVersion sets the build version reported in telemetry.
func WithVersion(v string) Option {
	return func(o *options) error {
		o.version = v
		return nil
	}
}

// WithAfterPublish runs fn after each JetStream ack and before the KV
// write. An error from fn stops the informer at once with that error, like
// a crash between publish and KV update (tests of exactly-once delivery).
func WithAfterPublish(fn func(ctx context.Context, ev *eventsv1.ResourceEvent) error) Option {
	return func(o *options) error {
		if fn == nil {
			return fmt.Errorf("nil after-publish hook: %w", ErrInvalidOption)
		}
		o.afterPublish = fn
		return nil
	}
}

// WithStreamCheck sets how often the leader looks whether the events
// stream was created again under its term (default
// controller.DefaultStreamCheck); 0 leaves only the look a publish
// conflict makes (tests of that look).
func WithStreamCheck(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("stream check %s: %w", d, ErrInvalidOption)
		}
		o.streamCheck = d
		return nil
	}
}

// WithHealthyAfter sets how long a silent watch stream must live before the
// reconnect backoff resets (default 60s).
func WithHealthyAfter(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("healthy-after %s: %w", d, ErrInvalidOption)
		}
		o.healthyAfter = d
		return nil
	}
}

// WithListening calls fn with the HTTP server's address once it listens
// (tests start it on port 0).
func WithListening(fn func(addr string)) Option {
	return func(o *options) error {
		if fn == nil {
			return fmt.Errorf("nil listening callback: %w", ErrInvalidOption)
		}
		o.listening = func(a net.Addr) { fn(a.String()) }
		return nil
	}
}

// WithTailMargin sets how many sequences before the persisted cache's
// position a new leader reads the events stream (default
// publish.TailMargin, 8,192), so a test reaches past it with a few events.
func WithTailMargin(n uint64) Option {
	return func(o *options) error {
		if n == 0 {
			return fmt.Errorf("tail margin 0: %w", ErrInvalidOption)
		}
		o.tailMargin = n
		return nil
	}
}

// WithLeaseClock gives the lease elector another clock than time.Now
// (lease.Config.Now): a test makes the lease look unconfirmed, as after a
// pause of the process, while its renewals still succeed.
func WithLeaseClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("nil lease clock: %w", ErrInvalidOption)
		}
		o.leaseClock = now
		return nil
	}
}
