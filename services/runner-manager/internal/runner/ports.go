package runner

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// Pool hands out ports from a range, skipping ports that are in use on the
// host (something else listening on 127.0.0.1). Safe for concurrent use.
type Pool struct {
	low, high int
	host      string

	mu    sync.Mutex
	inUse map[int]bool // guarded by mu
	next  int          // guarded by mu; round-robin start, so a freed port is not reused at once
}

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

// Acquire returns a free port or [ErrNoPorts].
func (p *Pool) Acquire() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.Size()
	for i := range n {
		port := p.low + (p.next-p.low+i)%n
		if p.inUse[port] || !p.free(port) {
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
