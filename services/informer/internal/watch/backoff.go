package watch

import "github.com/cenkalti/backoff/v5"

// newBackoff returns the reconnect backoff of cfg: BackoffInitial, doubling
// per failed cycle, capped at BackoffMax, each delay randomised by
// +/-BackoffJitter (0.25 = 25 %) so replicas and resources do not reconnect
// in lock step. Run resets it once a stream has been healthy, which fixes
// the original informer's never-resetting attempt counter.
func newBackoff(cfg Config) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.BackoffInitial,
		RandomizationFactor: cfg.BackoffJitter,
		Multiplier:          2,
		MaxInterval:         cfg.BackoffMax,
	}
	b.Reset()
	return b
}
