package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
)

// streams tracks in-flight streaming requests so that a stream whose runner
// endpoint leaves the routing table is cancelled (and ends cleanly) instead
// of lingering on a dead or reassigned runner. Safe for concurrent use.
type streams struct {
	mu   sync.Mutex
	next uint64             // guarded by mu
	m    map[uint64]tracked // guarded by mu
}

type tracked struct {
	sessionID string
	ep        registry.Endpoint
	cancel    context.CancelCauseFunc
}

func newStreams() *streams {
	return &streams{m: map[uint64]tracked{}}
}

// add tracks a stream; the returned func untracks it.
func (s *streams) add(sessionID string, ep registry.Endpoint, cancel context.CancelCauseFunc) func() {
	s.mu.Lock()
	id := s.next
	s.next++
	s.m[id] = tracked{sessionID: sessionID, ep: ep, cancel: cancel}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.m, id)
		s.mu.Unlock()
	}
}

// len returns the number of tracked streams.
func (s *streams) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// sweep cancels, with cause ErrEndpointGone, every stream whose session is no
// longer routable or now routes to another runner process, and returns how
// many it cancelled. Lookups are in memory, so a sweep is cheap.
func (s *streams) sweep(res Resolver) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, t := range s.m {
		ep, ok := res.Lookup(t.sessionID)
		if ok && sameRunner(ep, t.ep) {
			continue
		}
		t.cancel(ErrEndpointGone)
		delete(s.m, id)
		n++
	}
	return n
}

// run sweeps every interval until ctx ends.
func (s *streams) run(ctx context.Context, res Resolver, interval time.Duration, onCancel func(n int)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n := s.sweep(res); n > 0 {
				onCancel(n)
			}
		}
	}
}

// sameRunner reports whether two records name the same runner process. The
// owner and state may change (takeover, stopping) without ending streams.
func sameRunner(a, b registry.Endpoint) bool {
	return a.Host == b.Host && a.Port == b.Port && a.PID == b.PID && a.StartedAt.Equal(b.StartedAt)
}
