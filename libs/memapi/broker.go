package memapi

import "sync"

// broker hands every change of every resource to every open watch stream,
// like the real server's event broker (rh-trex's EventBroker, read from its
// code): one buffer per stream, fed by every resource, and a stream
// skips the other resources' changes only once it takes them off its
// buffer. A burst of project changes can therefore fill a session watcher's
// buffer and lose session events, as it can on the real server.
type broker struct {
	counts *watchCounts

	mu       sync.Mutex
	watchers map[*watcher]struct{} // guarded by mu
	stopped  bool                  // guarded by mu; no new watchers after shutdown
}

func newBroker(counts *watchCounts) *broker {
	return &broker{counts: counts, watchers: make(map[*watcher]struct{})}
}

// notify queues c on every watcher without blocking; a full buffer drops
// the change silently, like the real server. Stores call it under their
// own lock, so each watcher gets a store's changes in commit order.
func (b *broker) notify(c change) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.watchers {
		// Counted before it is queued: the watcher may take and send it
		// at once, and pending must never read 0 while it waits.
		b.counts.pending.Add(1)
		select {
		case w.ch <- c:
		default:
			b.counts.pending.Add(-1)
			b.counts.dropped.Add(1)
		}
	}
}

// add registers a watcher; it returns nil after shutdown began.
func (b *broker) add(buffer int) *watcher {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	w := &watcher{ch: make(chan change, buffer), end: make(chan struct{})}
	b.watchers[w] = struct{}{}
	return w
}

// remove unregisters w and abandons the changes still queued on it
// (nothing queues on w once it is unregistered).
func (b *broker) remove(w *watcher) {
	b.mu.Lock()
	delete(b.watchers, w)
	b.mu.Unlock()
	for {
		select {
		case <-w.ch:
			b.counts.pending.Add(-1)
		default:
			return
		}
	}
}

// end ends every current watcher (and, with stop, refuses new ones). It
// returns how many were ended.
func (b *broker) end(stop bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if stop {
		b.stopped = true
	}
	n := len(b.watchers)
	for w := range b.watchers {
		close(w.end)
		delete(b.watchers, w)
	}
	return n
}

func (b *broker) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.watchers)
}
