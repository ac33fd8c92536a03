package watch

import (
	"sync"

	"github.com/ambient-code/control-plane/libs/events"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// buffer holds watch events between the receive goroutine and the loop that
// applies them. It is unbounded on purpose: the receive goroutine must never
// wait (the server drops events of slow readers), and the applying side
// only updates an in-memory cache, so the buffer stays short except while a
// list is in progress, when it holds what changed during the list.
//
// A buffer is safe for concurrent use by one producer and one consumer.
type buffer[T events.APIObject] struct {
	mu     sync.Mutex
	events []Event[T] // guarded by mu
	moves  int        // guarded by mu; UPDATED and DELETED events pushed so far
	total  int        // guarded by mu; events pushed so far
	err    error      // guarded by mu; why the stream ended
	ended  bool       // guarded by mu
	// ready holds one token when events or the end are waiting; buffered 1
	// so push never blocks.
	ready chan struct{}
}

func newBuffer[T events.APIObject]() *buffer[T] {
	return &buffer[T]{ready: make(chan struct{}, 1)}
}

func (b *buffer[T]) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// push appends one event.
func (b *buffer[T]) push(ev Event[T]) {
	b.mu.Lock()
	b.events = append(b.events, ev)
	b.total++
	if movesRows(ev.Type) {
		b.moves++
	}
	b.mu.Unlock()
	b.signal()
}

// end records that the stream ended with err.
func (b *buffer[T]) end(err error) {
	b.mu.Lock()
	b.err, b.ended = err, true
	b.mu.Unlock()
	b.signal()
}

// take returns the buffered events (emptying the buffer), whether the
// stream has ended (these are then its last events) and why. The end is
// reported with the last events, not after them: end's signal may merge
// with the one of the last push, and no token would come to ask again.
func (b *buffer[T]) take() ([]Event[T], bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	evs := b.events
	b.events = nil
	return evs, b.ended, b.err
}

// counts returns how many events, and how many of them moves (movesRows),
// were pushed so far.
func (b *buffer[T]) counts() (total, moves int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total, b.moves
}

// movesRows reports whether a change of type t moves objects in the
// server's list order, under a list that pages through it by offset. The
// real server lists in database order: a delete takes a row out, and an
// update writes the row's new version at the end of the table, so the rows
// after either move up, and the first of the next page slips onto the page
// already read. A create only appends.
func movesRows(t ambientv1.EventType) bool {
	return t == ambientv1.EventType_EVENT_TYPE_UPDATED || t == ambientv1.EventType_EVENT_TYPE_DELETED
}
