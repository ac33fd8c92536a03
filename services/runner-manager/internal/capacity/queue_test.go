package capacity

import (
	"slices"
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	t.Parallel()
	q := New()
	for _, id := range []string{"a", "b", "c"} {
		q.Add(id)
		// Distinct times: the order below must not rest on map order.
		q.mu.Lock()
		q.waiting[id] = time.Unix(int64(len(q.waiting)), 0)
		q.mu.Unlock()
	}
	q.Add("a") // keeps its place
	q.Remove("b")
	if got := q.Oldest(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("Oldest = %v, want [a c]", got)
	}
	if !q.Has("c") || q.Has("b") {
		t.Fatal("Has is wrong")
	}
	select {
	case <-q.Wake():
		t.Fatal("woken before Freed")
	default:
	}
	q.Freed()
	q.Freed() // never blocks; one wake-up pending
	<-q.Wake()
	select {
	case <-q.Wake():
		t.Fatal("two wake-ups for one pending")
	default:
	}
}
