// Package capacity holds the sessions waiting for a free runner slot. A
// Pending session that finds this replica at LOCAL_MAX_SESSIONS (or out of
// ports) is reported (condition RunnerStarted=False, CapacityExceeded or
// NoPortAvailable), acked and queued here; when a runner ends, the queue
// wakes its reader, which starts the waiting sessions oldest first while
// room lasts (reconcile's startWaiting). The policy lives in package
// reconcile; this is the queue.
package capacity

import (
	"slices"
	"sync"
	"time"
)

// Queue is the set of waiting sessions with the time each started
// waiting, plus a wake-up signal. Safe for concurrent use.
type Queue struct {
	wake chan struct{} // buffered 1: a wake-up is never lost and Freed never blocks

	mu      sync.Mutex
	waiting map[string]time.Time // guarded by mu
}

// New returns an empty queue.
func New() *Queue {
	return &Queue{wake: make(chan struct{}, 1), waiting: map[string]time.Time{}}
}

// Add queues session id; a session already waiting keeps its place.
func (q *Queue) Add(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.waiting[id]; !ok {
		q.waiting[id] = time.Now()
	}
}

// Remove takes session id out of the queue (started, stopped, deleted or
// moved elsewhere).
func (q *Queue) Remove(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.waiting, id)
}

// Len returns how many sessions wait.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// Has reports whether session id waits.
func (q *Queue) Has(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.waiting[id]
	return ok
}

// Oldest returns the waiting sessions, longest waiting first.
func (q *Queue) Oldest() []string {
	type entry struct {
		id    string
		since time.Time
	}
	q.mu.Lock()
	es := make([]entry, 0, len(q.waiting))
	for id, t := range q.waiting {
		es = append(es, entry{id, t})
	}
	q.mu.Unlock()
	slices.SortFunc(es, func(a, b entry) int { return a.since.Compare(b.since) })
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.id
	}
	return out
}

// Freed says a runner ended and its slot is free; it never blocks.
func (q *Queue) Freed() {
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Wake receives after Freed: time to start waiting sessions.
func (q *Queue) Wake() <-chan struct{} { return q.wake }
