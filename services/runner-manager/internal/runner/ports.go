package runner

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
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
type Pool struct {
	low, high int
	host      string

	mu    sync.Mutex
	inUse map[int]bool // guarded by mu
	next  int          // guarded by mu; round-robin start, so a freed port is not reused at once
	named NamedPorts   // guarded by mu; nil: nothing but the pool names ports
}

// NamedPorts returns the ports that something outside the pool still names
// and that must not be handed out (runner-manager: the ports of this
// host's runner registry records, whoever owns them). An error means they
// are unknown; Acquire then hands out nothing ([ErrPortsUnknown]).
type NamedPorts func(ctx context.Context) (map[int]bool, error)

// NewPool returns a pool over [low, high]; probeHost is the address probed
// for busy ports ("127.0.0.1" when empty).
func NewPool(low, high int, probeHost string) (*Pool, error) {
	if low < 1 || high > 65535 || low > high {
		return nil, fmt.Errorf("port range %d-%d: want 1 <= low <= high <= 65535", low, high)
	}
	if probeHost == "" {
		probeHost = "127.0.0.1"
	}
	return &Pool{low: low, high: high, host: probeHost, inUse: map[int]bool{}, next: low}, nil
}

// Size is the number of ports in the range.
func (p *Pool) Size() int { return p.high - p.low + 1 }

// InUse is the number of ports handed out and not yet released.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inUse)
}

// SkipNamed makes Acquire skip the ports named returns (nil: skip none).
func (p *Pool) SkipNamed(named NamedPorts) {
	p.mu.Lock()
	p.named = named
	p.mu.Unlock()
}

// Acquire returns a port that is neither handed out, nor named (see
// SkipNamed), nor busy on the host; or [ErrNoPorts], or [ErrPortsUnknown]
// when the named ports cannot be read.
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
	n := p.Size()
	for i := range n {
		port := p.low + (p.next-p.low+i)%n
		if p.inUse[port] || named[port] || !p.free(port) {
			continue
		}
		p.inUse[port] = true
		p.next = port + 1
		if p.next > p.high {
			p.next = p.low
		}
		return port, nil
	}
	return 0, ErrNoPorts
}

// Release returns a port to the pool; releasing a port twice is harmless.
func (p *Pool) Release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inUse, port)
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
