package runner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

// Pool hands out ports from a range, skipping ports that are in use on the
// host (something else listening on 127.0.0.1) and ports that something
// still names (see [Pool.SkipNamed]). Safe for concurrent use.
//
// A port is the pool's again only when [Pool.Release] is called: the
// Manager keeps a runner's port after the runner exits until its caller
// says nothing names it any more ([Process.ReleasePort]). A port that is
// free to bind is not therefore free to hand out: agui-proxy routes a
// session by the host:port of its registry record, so a port still named
// by some session's record and given to another session's runner would
// send the first session's clients to the second session's runner.
//
// Nor is a released port free at once when the pool has a reuse delay
// ([WithReuseDelay]): a router that missed the release (agui-proxy cut off
// from NATS routes by the table it last had) still sends the released
// session's clients to host:port until it notices its table is stale.
// The delay outlasts that, so such clients find no runner there rather
// than another session's. It is measured on the monotonic clock and lives
// in memory only: a restarted pool starts its round-robin at a random port
// of the range instead, so a port released just before the restart is
// unlikely to be the first one handed out again.
type Pool struct {
	low, high  int
	host       string
	reuseDelay time.Duration
	// now reads the clock the reuse delay is measured on: time.Now, whose
	// monotonic reading a wall-clock step does not move. Tests replace it.
	now func() time.Time

	mu    sync.Mutex
	inUse map[int]bool // guarded by mu
	// released holds when each port was last released (with a reuse
	// delay); Acquire drops the entries it finds older than the delay.
	released map[int]time.Time // guarded by mu
	next     int               // guarded by mu; round-robin start, so a freed port is not reused at once
	named    NamedPorts        // guarded by mu; nil: nothing but the pool names ports
}

// PoolOption configures a [Pool] at [NewPool].
type PoolOption func(*Pool)

// WithReuseDelay keeps a released port from being handed out again for d
// (0, the default: at once). runner-manager sets it above the time
// agui-proxy takes to stop routing by a table it can no longer confirm
// (PORT_REUSE_DELAY).
func WithReuseDelay(d time.Duration) PoolOption {
	return func(p *Pool) { p.reuseDelay = d }
}

// NamedPorts returns the ports that something outside the pool still names
// and that must not be handed out (runner-manager: the ports of this
// host's runner registry records, whoever owns them). An error means they
// are unknown; Acquire then hands out nothing ([ErrPortsUnknown]).
type NamedPorts func(ctx context.Context) (map[int]bool, error)

// NewPool returns a pool over [low, high]; probeHost is the address probed
// for busy ports ("127.0.0.1" when empty). Its round-robin starts at a
// random port of the range (see [Pool]). A bad range or a negative reuse
// delay is an error.
func NewPool(low, high int, probeHost string, opts ...PoolOption) (*Pool, error) {
	if low < 1 || high > 65535 || low > high {
		return nil, fmt.Errorf("port range %d-%d: want 1 <= low <= high <= 65535", low, high)
	}
	if probeHost == "" {
		probeHost = "127.0.0.1"
	}
	p := &Pool{low: low, high: high, host: probeHost, now: time.Now, inUse: map[int]bool{}, released: map[int]time.Time{},
		// Not low: the reuse delay of the ports released before a restart
		// is gone with the old process, and a restarted pool that began
		// at low would hand out again the ports the old one began with.
		next: low + rand.IntN(high-low+1), //nolint:gosec // spreads starts over the range; nothing to guess or keep secret
	}
	for _, opt := range opts {
		opt(p)
	}
	if p.reuseDelay < 0 {
		return nil, fmt.Errorf("port reuse delay %s: want >= 0", p.reuseDelay)
	}
	return p, nil
}

// Size is the number of ports in the range.
func (p *Pool) Size() int { return p.high - p.low + 1 }

// InUse is the number of ports handed out and not yet released.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inUse)
}

// Free is the number of ports neither handed out nor waiting out the
// reuse delay: what the pool may still hand out now, unless the host or a
// record holds them (Acquire skips those). Ports that cool are not
// counted: a caller that counted them would try starts that can only
// fail until the delay ends.
func (p *Pool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	cooling, _ := p.coolingLocked(p.now())
	return p.Size() - len(p.inUse) - cooling
}

// ReusableIn reports how long until the first port that waits out the
// reuse delay is reusable; ok is false when none waits.
func (p *Pool) ReusableIn() (wait time.Duration, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cooling, soonest := p.coolingLocked(p.now())
	return soonest, cooling > 0
}

// coolingLocked counts the released ports still within the reuse delay at
// now and returns how long the first of them still waits; it drops the
// entries of the ports that have waited it out. The caller holds p.mu.
func (p *Pool) coolingLocked(now time.Time) (cooling int, soonest time.Duration) {
	soonest = p.reuseDelay
	for port, at := range p.released {
		wait := p.reuseDelay - now.Sub(at)
		if wait <= 0 {
			delete(p.released, port)
			continue
		}
		cooling++
		soonest = min(soonest, wait)
	}
	return cooling, soonest
}

// SkipNamed makes Acquire skip the ports named returns (nil: skip none).
func (p *Pool) SkipNamed(named NamedPorts) {
	p.mu.Lock()
	p.named = named
	p.mu.Unlock()
}

// Acquire returns a port that is neither handed out, nor named (see
// SkipNamed), nor released less than the reuse delay ago, nor busy on the
// host; or [ErrNoPorts] (a [*PortsCoolingError] when ports wait out the
// reuse delay, saying how long the first still waits), or
// [ErrPortsUnknown] when the named ports cannot be read.
func (p *Pool) Acquire(ctx context.Context) (int, error) {
	p.mu.Lock()
	namedFn := p.named
	p.mu.Unlock()
	var named map[int]bool
	if namedFn != nil {
		// Read outside the lock: it may ask the registry. A record written
		// after this read names a port its writer acquired (in inUse, if
		// it is this pool's) or that its runner has bound (the probe below).
		var err error
		if named, err = namedFn(ctx); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrPortsUnknown, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	cooling, soonest := 0, p.reuseDelay
	n := p.Size()
	for i := range n {
		port := p.low + (p.next-p.low+i)%n
		if p.inUse[port] || named[port] {
			continue
		}
		if at, ok := p.released[port]; ok {
			if wait := p.reuseDelay - now.Sub(at); wait > 0 {
				cooling++
				soonest = min(soonest, wait)
				continue
			}
			delete(p.released, port)
		}
		if !p.free(port) {
			continue
		}
		p.inUse[port] = true
		p.next = port + 1
		if p.next > p.high {
			p.next = p.low
		}
		return port, nil
	}
	if cooling > 0 {
		// Still ErrNoPorts, typed: the shortage ends by itself.
		return 0, &PortsCoolingError{Cooling: cooling, Delay: p.reuseDelay, ReusableIn: soonest}
	}
	return 0, ErrNoPorts
}

// Release returns a port to the pool, to be handed out again once the
// reuse delay has passed; releasing a port twice is harmless (the second
// release does not restart the delay).
func (p *Pool) Release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inUse[port] {
		return
	}
	delete(p.inUse, port)
	if p.reuseDelay > 0 {
		p.released[port] = p.now()
	}
}

// free probes the port by binding it. There is a window between the probe and
// the runner binding it; a runner that loses the race fails its health check
// or exits, and the session reports it.
func (p *Pool) free(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort(p.host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	// Closing a listener we just opened cannot fail in a way that matters here.
	_ = ln.Close()
	return true
}
