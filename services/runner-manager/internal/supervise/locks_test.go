package supervise

import "testing"

// tryLock takes a free session and refuses one that is held or waited for,
// holding nothing when it refuses.
func TestTryLock(t *testing.T) {
	t.Parallel()
	var k keyedMutex
	unlock := k.lock("a")
	if _, ok := k.tryLock("a"); ok {
		t.Fatal("tryLock took a held session")
	}
	unlockB, ok := k.tryLock("b")
	if !ok {
		t.Fatal("tryLock refused a free session")
	}
	if _, ok := k.tryLock("b"); ok {
		t.Fatal("tryLock took a session it holds")
	}
	unlockB()
	unlock()
	again, ok := k.tryLock("a")
	if !ok {
		t.Fatal("tryLock refused a released session")
	}
	again()
	if len(k.locks) != 0 {
		t.Fatalf("locks left behind: %v", k.locks)
	}
}
