package group

import "sync"

// gate admits new lanes until closed and reports when the last lane
// goroutine has ended, so a stop can wait for in-flight work without
// racing new deliveries.
type gate struct {
	mu       sync.Mutex
	closed   bool          // guarded by mu
	inflight int           // guarded by mu; running lanes
	idle     chan struct{} // closed once closed && inflight == 0; guarded by mu
}

func newGate() *gate { return &gate{idle: make(chan struct{})} }

// enter returns false once the gate is closed.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.inflight++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if g.closed && g.inflight == 0 {
		close(g.idle)
	}
}

// close stops admissions and returns a channel closed when nothing is in
// flight. Only the first call closes.
func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		if g.inflight == 0 {
			close(g.idle)
		}
	}
	return g.idle
}
