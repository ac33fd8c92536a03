// Package keylock serialises work per key (an object id) without false
// sharing: two keys never wait for each other, however many are held.
// k8s.io/utils/keymutex hashes keys into a fixed set of mutexes instead, so
// unrelated keys collide (64 keys held over 256 mutexes: about 14 of them
// wait on someone else's), which costs throughput when a lock is held over
// a network call.
package keylock

import "sync"

// Map holds one mutex per key that is held or waited for, and none for the
// others. The zero value is ready to use; a Map is safe for concurrent use
// and must not be copied after first use.
type Map struct {
	mu    sync.Mutex
	locks map[string]*lock // guarded by mu
}

type lock struct {
	mu   sync.Mutex
	refs int // guarded by Map.mu: holders and waiters
}

// Lock locks key, waiting while someone else holds it, and returns its
// unlock func (call it once).
func (m *Map) Lock(key string) (unlock func()) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*lock{}
	}
	l := m.locks[key]
	if l == nil {
		l = &lock{}
		m.locks[key] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return m.unlocker(key, l)
}

// TryLock locks key when nobody holds or waits for it; ok is false (and
// nothing held) otherwise.
func (m *Map) TryLock(key string) (unlock func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[key] != nil {
		return nil, false // held, or about to be: refs counts waiters too
	}
	if m.locks == nil {
		m.locks = map[string]*lock{}
	}
	l := &lock{refs: 1}
	l.mu.Lock() // new and unshared: never blocks
	m.locks[key] = l
	return m.unlocker(key, l), true
}

// Len returns how many keys are held or waited for.
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.locks)
}

// unlocker returns the unlock func of l, held for key.
func (m *Map) unlocker(key string, l *lock) func() {
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(m.locks, key)
		}
		m.mu.Unlock()
	}
}
