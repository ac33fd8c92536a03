package watch

import (
	"math/rand/v2"
	"time"
)

// Backoff computes reconnect delays: Initial, doubling per failed attempt,
// capped at Max, each with +/-Jitter (a fraction, 0.25 = 25 %) so replicas and
// resources do not reconnect in lock step. Reset returns to Initial; the
// watch loop calls it once a stream has been healthy, which fixes the
// original informer's never-resetting attempt counter.
//
// A Backoff is not safe for concurrent use; each watch loop owns one.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Jitter  float64
	attempt int
	// rand returns a float in [0, 1); nil uses math/rand/v2.
	rand func() float64
}

// Next returns the delay before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Initial
	for i := 0; i < b.attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.attempt++
	if b.Jitter <= 0 {
		return d
	}
	r := rand.Float64
	if b.rand != nil {
		r = b.rand
	}
	// Uniform in [d*(1-J), d*(1+J)).
	f := 1 - b.Jitter + 2*b.Jitter*r()
	return time.Duration(float64(d) * f)
}

// Reset starts the sequence again from Initial.
func (b *Backoff) Reset() { b.attempt = 0 }
