// Package queue provides a keyed, coalescing work queue.
//
// The informer's receive loop must never block on publishing (the API server
// silently drops events for slow watchers), so it only records the newest
// state of an object and adds the object's key here. A key is queued at most
// once however often it is added, and it is never handed to two workers at
// the same time: per key, work happens in order; across keys, in parallel.
// The state itself lives with the caller; the queue only orders keys.
//
// Memory is bounded by the number of distinct keys, not by the number of
// changes, which is what lets the receive loop outrun a slow downstream.
package queue

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrShutDown is returned by [Queue.Get] once the queue has been shut down.
var ErrShutDown = errors.New("queue shut down")

// Queue is a FIFO of distinct keys with processing tracking, modelled on
// client-go's workqueue: a key added while it is being processed is queued
// again when [Queue.Done] is called for it, never handed out twice at once.
//
// A Queue is safe for concurrent use. The zero value is not usable; call New.
type Queue[K comparable] struct {
	mu         sync.Mutex
	items      []K                      // guarded by mu; FIFO, items[head:] are queued
	head       int                      // guarded by mu
	dirty      map[K]struct{}           // guarded by mu; queued or re-added while processing
	processing map[K]struct{}           // guarded by mu; handed out, Done not yet called
	timers     map[*time.Timer]struct{} // guarded by mu; pending AddAfter
	shutdown   bool                     // guarded by mu

	// wake holds one token when a waiting Get may find work; buffered 1 so
	// Add never blocks, and Get passes the token on while items remain.
	wake chan struct{}
	done chan struct{} // closed by ShutDown
}

// New returns an empty queue.
func New[K comparable]() *Queue[K] {
	return &Queue[K]{
		dirty:      map[K]struct{}{},
		processing: map[K]struct{}{},
		timers:     map[*time.Timer]struct{}{},
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

// Add queues key unless it is already queued. A key being processed is
// queued again when Done is called for it. Add never blocks; after ShutDown
// it does nothing.
func (q *Queue[K]) Add(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue[K]) addLocked(key K) {
	if q.shutdown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.dirty[key] = struct{}{}
	if _, ok := q.processing[key]; ok {
		return
	}
	q.items = append(q.items, key)
	q.signal()
}

// AddAfter adds key after d (used to retry with backoff). It does nothing
// after ShutDown; pending timers are stopped by ShutDown.
func (q *Queue[K]) AddAfter(key K, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		delete(q.timers, t)
		q.addLocked(key)
	})
	q.timers[t] = struct{}{}
}

// signal leaves a wake token for a waiting Get; it never blocks.
func (q *Queue[K]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Get blocks until a key is available and marks it as processing; the
// caller must call Done with it. It returns ErrShutDown after ShutDown and
// ctx.Err() when ctx ends first.
func (q *Queue[K]) Get(ctx context.Context) (K, error) {
	var zero K
	for {
		q.mu.Lock()
		if q.shutdown {
			q.mu.Unlock()
			return zero, ErrShutDown
		}
		if q.head < len(q.items) {
			key := q.items[q.head]
			q.items[q.head] = zero // drop the reference for the GC
			q.head++
			if q.head == len(q.items) {
				q.items = q.items[:0]
				q.head = 0
			} else {
				q.signal() // more work: wake the next waiter
			}
			delete(q.dirty, key)
			q.processing[key] = struct{}{}
			q.mu.Unlock()
			return key, nil
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}

// Done marks key as no longer processing; if it was added meanwhile it is
// queued again.
func (q *Queue[K]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok && !q.shutdown {
		q.items = append(q.items, key)
		q.signal()
	}
}

// Len returns the number of queued keys (not counting keys being processed).
func (q *Queue[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// ShutDown makes every current and future Get return ErrShutDown and stops
// pending AddAfter timers. It is idempotent.
func (q *Queue[K]) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	q.shutdown = true
	for t := range q.timers {
		t.Stop()
	}
	clear(q.timers)
	close(q.done)
}
