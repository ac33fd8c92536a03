package keylock

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// TestTryLock: TryLock takes a free key and refuses one that is held or
// waited for, holding nothing when it refuses; nothing is left once every
// key is unlocked.
func TestTryLock(t *testing.T) {
	t.Parallel()
	var m Map
	unlock := m.Lock("a")
	if _, ok := m.TryLock("a"); ok {
		t.Fatal("TryLock took a held key")
	}
	unlockB, ok := m.TryLock("b")
	if !ok {
		t.Fatal("TryLock refused a free key")
	}
	if _, ok := m.TryLock("b"); ok {
		t.Fatal("TryLock took a key it holds")
	}
	unlockB()
	unlock()
	again, ok := m.TryLock("a")
	if !ok {
		t.Fatal("TryLock refused a released key")
	}
	again()
	if n := m.Len(); n != 0 {
		t.Fatalf("%d keys left behind", n)
	}
}

// TestKeysDoNotShare: with one key held, every other key is taken at once
// (a hashed key mutex would make some of them wait), and a second Lock of
// the held key waits until it is unlocked.
func TestKeysDoNotShare(t *testing.T) {
	t.Parallel()
	var m Map
	unlock := m.Lock("held")
	for i := range 10_000 {
		u, ok := m.TryLock(strconv.Itoa(i))
		if !ok {
			t.Fatalf("key %d waits on another key", i)
		}
		u()
	}
	var wg sync.WaitGroup
	got := make(chan struct{})
	wg.Go(func() {
		u := m.Lock("held")
		close(got)
		u()
	})
	// Once the second Lock has registered as a waiter it must still wait.
	for waiters := 0; waiters < 2; {
		m.mu.Lock()
		waiters = m.locks["held"].refs
		m.mu.Unlock()
		runtime.Gosched()
	}
	select {
	case <-got:
		t.Fatal("a second Lock of a held key did not wait")
	default:
	}
	unlock()
	wg.Wait()
	if n := m.Len(); n != 0 {
		t.Fatalf("%d keys left behind", n)
	}
}
