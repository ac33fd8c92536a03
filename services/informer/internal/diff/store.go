package diff

import (
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// ID returns the object id from the metadata.
func ID[T events.APIObject](o T) string { return o.GetMetadata().GetId() }

// UpdatedAt returns metadata.updated_at truncated to microseconds; zero when
// unset.
func UpdatedAt[T events.APIObject](o T) time.Time {
	ts := o.GetMetadata().GetUpdatedAt()
	if ts == nil {
		return time.Time{}
	}
	return Micros(ts.AsTime())
}

// Observed is one thing the watch saw: an object that exists in the given
// state, or the deletion of an id.
type Observed[T events.APIObject] struct {
	ID      string
	Object  T // valid unless Deleted
	Deleted bool
}

// Change is what a worker must publish for one id.
type Change[T events.APIObject] struct {
	Type eventsv1.EventType
	ID   string
	// Object is the new state for ADDED and MODIFIED and the last known
	// state for DELETED.
	Object T
	// Old is the previously published state for MODIFIED, zero otherwise.
	Old T
	// Version is events.VersionOf(Object).
	Version string
}

// Result tells what an update of the store did, for the queue and metrics.
type Result struct {
	// Dirty lists ids whose desired state now differs from the published one.
	Dirty []string
	// Stale counts watch events dropped because they were not newer than
	// the cached object; Unknown counts deletes of ids never seen.
	Stale, Unknown int
}

// state is one object with its version (events.VersionOf), computed once
// when the object enters the store: comparing versions is comparing
// updated_at and a hash of the content, without re-encoding on every check.
type state[T events.APIObject] struct {
	obj T
	ver string // "" = absent
}

type entry[T events.APIObject] struct {
	desired, published state[T]
}

func (e *entry[T]) dirty() bool { return e.desired.ver != e.published.ver }

// Store is the cache of one resource: per id the desired state (newest seen
// in a list or on the watch) and the published state (acked by JetStream
// and stored in KV). Cached objects are never mutated; callers hand objects
// over and must not change them afterwards.
//
// A Store is safe for concurrent use: the receive loop updates desired
// states while publish workers take changes and record what they published.
type Store[T events.APIObject] struct {
	mu      sync.Mutex
	entries map[string]*entry[T] // guarded by mu
	size    int                  // guarded by mu; entries with a desired state
}

// NewStore returns an empty store.
func NewStore[T events.APIObject]() *Store[T] {
	return &Store[T]{entries: map[string]*entry[T]{}}
}

func newState[T events.APIObject](o T) state[T] {
	return state[T]{obj: o, ver: events.VersionOf(o)}
}

// Load replaces the store's content with objects known to be published (the
// persisted KV cache); desired starts equal to published.
func (s *Store[T]) Load(published []T) {
	entries := make(map[string]*entry[T], len(published))
	for _, o := range published {
		st := newState(o)
		entries[ID(o)] = &entry[T]{desired: st, published: st}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = entries
	s.size = len(entries)
}

// Sync makes the listed objects the desired state (the list is the truth at
// the time it was taken: ids not in it are gone), then applies the watch
// events buffered while listing, in order, dropping those not newer than
// what is cached. It happens under one lock, so a worker never sees a state
// between the two. It returns every dirty id, including ones that were
// dirty before.
func (s *Store[T]) Sync(listed []T, buffered []Observed[T]) Result {
	// Versions are computed before taking the lock: hashing is the costly
	// part and the receive loop must not wait on it.
	states := make([]state[T], len(listed))
	for i, o := range listed {
		states[i] = newState(o)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]struct{}, len(listed))
	for _, st := range states {
		id := ID(st.obj)
		seen[id] = struct{}{}
		s.setDesired(s.entry(id), st)
	}
	for id, e := range s.entries {
		if _, ok := seen[id]; !ok {
			s.clearDesired(e)
		}
	}
	var r Result
	for _, ob := range buffered {
		s.applyLocked(ob, &r)
	}
	r.Dirty = r.Dirty[:0]
	for id, e := range s.entries {
		switch {
		case e.dirty():
			r.Dirty = append(r.Dirty, id)
		case e.desired.ver == "":
			delete(s.entries, id) // absent and published as absent
		}
	}
	return r
}

// Apply records one live watch event; Result.Dirty holds the id when it now
// needs publishing.
func (s *Store[T]) Apply(ob Observed[T]) Result {
	var st state[T]
	if !ob.Deleted {
		st = newState(ob.Object)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Result
	s.applyStateLocked(ob.ID, st, &r)
	return r
}

func (s *Store[T]) applyLocked(ob Observed[T], r *Result) {
	var st state[T]
	if !ob.Deleted {
		st = newState(ob.Object)
	}
	s.applyStateLocked(ob.ID, st, r)
}

// applyStateLocked applies one watch event; st.ver == "" is a delete.
func (s *Store[T]) applyStateLocked(id string, st state[T], r *Result) {
	e, ok := s.entries[id]
	if st.ver == "" {
		if !ok || e.desired.ver == "" {
			r.Unknown++ // the real server sends DELETED even for unknown ids
			return
		}
		s.clearDesired(e)
	} else {
		if !ok {
			e = s.entry(id)
		}
		if cur := e.desired; cur.ver != "" {
			// Not newer than the cache: an older updated_at, or the very same
			// state again. Same time with other content is accepted: losing
			// a real change is worse than publishing a doubtful one.
			ct, nt := UpdatedAt(cur.obj), UpdatedAt(st.obj)
			if nt.Before(ct) || cur.ver == st.ver {
				r.Stale++
				return
			}
		}
		s.setDesired(e, st)
	}
	if e.dirty() {
		r.Dirty = append(r.Dirty, id)
	}
}

func (s *Store[T]) entry(id string) *entry[T] {
	e, ok := s.entries[id]
	if !ok {
		e = &entry[T]{}
		s.entries[id] = e
	}
	return e
}

func (s *Store[T]) setDesired(e *entry[T], st state[T]) {
	if e.desired.ver == "" {
		s.size++
	}
	e.desired = st
}

func (s *Store[T]) clearDesired(e *entry[T]) {
	if e.desired.ver != "" {
		s.size--
	}
	e.desired = state[T]{}
}

// Next returns the change id needs now, or false when desired and published
// agree (or the id is unknown).
func (s *Store[T]) Next(id string) (Change[T], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok || !e.dirty() {
		return Change[T]{}, false
	}
	d, p := e.desired, e.published
	switch {
	case p.ver == "":
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_ADDED, ID: id, Object: d.obj, Version: d.ver}, true
	case d.ver != "":
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_MODIFIED, ID: id, Object: d.obj, Old: p.obj, Version: d.ver}, true
	default:
		return Change[T]{Type: eventsv1.EventType_EVENT_TYPE_DELETED, ID: id, Object: p.obj, Version: p.ver}, true
	}
}

// Published records that c was published and stored, and reports whether
// the id is still dirty (it changed again meanwhile).
func (s *Store[T]) Published(c Change[T]) bool {
	var st state[T]
	if c.Type != eventsv1.EventType_EVENT_TYPE_DELETED {
		st = state[T]{obj: c.Object, ver: c.Version}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[c.ID]
	if !ok {
		return false
	}
	e.published = st
	if e.desired.ver == "" && st.ver == "" {
		delete(s.entries, c.ID)
		return false
	}
	return e.dirty()
}

// Len returns the number of objects that currently exist (desired state).
func (s *Store[T]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Range calls fn with each object that currently exists (desired state),
// under the store's lock: fn must be quick and must not call the store.
func (s *Store[T]) Range(fn func(T)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if e.desired.ver != "" {
			fn(e.desired.obj)
		}
	}
}

// Get returns the desired state of id.
func (s *Store[T]) Get(id string) (T, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok || e.desired.ver == "" {
		var zero T
		return zero, false
	}
	return e.desired.obj, true
}

// PublishedState returns the published state of id and whether it exists.
func (s *Store[T]) PublishedState(id string) (T, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok || e.published.ver == "" {
		var zero T
		return zero, false
	}
	return e.published.obj, true
}
