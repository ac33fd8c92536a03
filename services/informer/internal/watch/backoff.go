package watch

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// reconnectBackoff is the reconnect backoff of a Watcher: BackoffInitial,
// doubling per failed cycle, capped at BackoffMax, each delay randomised by
// +/-BackoffJitter (0.25 = 25 %) so replicas and resources do not
// reconnect in lock step. Run resets it once a stream has been healthy,
// which fixes the original informer's never-resetting attempt counter.
type reconnectBackoff struct {
	*backoff.ExponentialBackOff
}

// newBackoff returns the reconnect backoff of cfg.
func newBackoff(cfg Config) reconnectBackoff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.BackoffInitial,
		RandomizationFactor: cfg.BackoffJitter,
		Multiplier:          2,
		MaxInterval:         cfg.BackoffMax,
	}
	b.Reset()
	return reconnectBackoff{b}
}

// NextBackOff returns the next delay, never longer than MaxInterval
// (WATCH_BACKOFF_MAX is documented as the longest delay). The cenkalti
// backoff caps the interval before it randomises it, so at the cap it
// would wait up to MaxInterval x (1 + jitter): 37.5 s of a 30 s maximum.
// A delay over the cap is mirrored below it rather than cut to it, so
// delays at the cap stay spread over [cap x (1 - jitter), cap] instead of
// half of them landing on the cap together.
func (b reconnectBackoff) NextBackOff() time.Duration {
	d := b.ExponentialBackOff.NextBackOff()
	if m := b.MaxInterval; m > 0 && d > m {
		d = m - min(d-m, m)
	}
	return d
}
