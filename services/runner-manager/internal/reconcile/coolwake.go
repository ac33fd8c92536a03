package reconcile

import (
	"sync"
	"time"
)

// coolWake wakes the capacity queue when the first runner port that waits
// out PORT_REUSE_DELAY becomes reusable. A start deferred only because
// ports cool would otherwise wait for the next runner end or resync,
// which may never come (RUNNER_RESYNC_INTERVAL=0, no runner left): the
// shortage ends at a known time, with no event to tell of it. One timer
// per reconciler, set to the soonest time asked for; it runs wake on the
// timer's own goroutine (time.AfterFunc), which must not block
// (capacity.Queue.Freed). Safe for concurrent use.
type coolWake struct {
	wake func()

	mu      sync.Mutex
	t       *time.Timer // guarded by mu; nil until first armed
	at      time.Time   // guarded by mu; when t fires, zero when not pending
	stopped bool        // guarded by mu
}

func newCoolWake(wake func()) *coolWake { return &coolWake{wake: wake} }

// arm makes the queue wake in d, unless a wake-up is due sooner already.
func (c *coolWake) arm(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := time.Now().Add(d)
	if c.stopped || (!c.at.IsZero() && !c.at.After(at)) {
		return
	}
	c.at = at
	if c.t == nil {
		c.t = time.AfterFunc(d, c.fire)
		return
	}
	// Reset of an AfterFunc timer whose function may be running: that
	// run wakes the queue once more, which is harmless.
	c.t.Reset(d)
}

// fire is the timer's function.
func (c *coolWake) fire() {
	c.mu.Lock()
	c.at = time.Time{}
	stopped := c.stopped
	c.mu.Unlock()
	if !stopped {
		c.wake()
	}
}

// stop disarms the timer for good (shutdown): nothing is left pending, and
// arm does nothing any more.
func (c *coolWake) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.t != nil {
		c.t.Stop()
	}
}
