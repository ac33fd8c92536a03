package supervise

import "sync"

// keyedMutex serialises work per session id across the event handler, the
// supervisors and the sweep. Safe for concurrent use.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock // guarded by mu
}

type keyLock struct {
	mu   sync.Mutex
	refs int // guarded by keyedMutex.mu
}

// lock locks id and returns its unlock func.
func (k *keyedMutex) lock(id string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[id]
	if l == nil {
		l = &keyLock{}
		k.locks[id] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return k.unlocker(id, l)
}

// tryLock locks id when nobody holds or waits for it; ok is false (and
// nothing held) otherwise.
func (k *keyedMutex) tryLock(id string) (unlock func(), ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.locks[id]
	if l != nil {
		return nil, false // held, or about to be: refs counts waiters too
	}
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l = &keyLock{refs: 1}
	l.mu.Lock() // new and unshared: never blocks
	k.locks[id] = l
	return k.unlocker(id, l), true
}

// unlocker returns the unlock func of l, held for id.
func (k *keyedMutex) unlocker(id string, l *keyLock) func() {
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, id)
		}
		k.mu.Unlock()
	}
}
