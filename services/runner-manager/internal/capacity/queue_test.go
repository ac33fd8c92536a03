package capacity

import (
	"slices"
	"strconv"
	"testing"
)

// drain takes every waiting session in the order the queue serves them.
func drain(t *testing.T, q *Queue) []string {
	t.Helper()
	var out []string
	for {
		id, ok := q.Next()
		if !ok {
			return out
		}
		if !q.Take(id) {
			t.Fatalf("Take(%s) of the session Next returned = false", id)
		}
		out = append(out, id)
	}
}

func TestQueue(t *testing.T) {
	t.Parallel()
	q := New()
	for _, id := range []string{"a", "b", "c"} {
		q.Add(id, "p")
	}
	q.Add("a", "p") // keeps its place
	q.Add("a", "other")
	q.Remove("b")
	if q.Len() != 2 || !q.Has("c") || q.Has("b") {
		t.Fatalf("Len = %d, Has(c) = %v, Has(b) = %v; want 2, true, false", q.Len(), q.Has("c"), q.Has("b"))
	}
	if q.Take("b") {
		t.Fatal("Take of a removed session = true")
	}
	if got := drain(t, q); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("served %v, want [a c]", got)
	}
	if q.Len() != 0 || q.Has("a") {
		t.Fatal("taken sessions still wait")
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

// A project that queues many sessions takes turns with the others: each
// freed slot goes to the project that has waited longest since it was
// last served, oldest first inside a project.
func TestQueueProjectsTakeTurns(t *testing.T) {
	t.Parallel()
	q := New()
	for i := range 5 {
		q.Add("a"+strconv.Itoa(i), "A")
	}
	q.Add("b0", "B")
	q.Add("b1", "B")
	q.Add("c0", "C")
	var got []string
	take := func() {
		t.Helper()
		id, ok := q.Next()
		if !ok || !q.Take(id) {
			t.Fatalf("nothing to take after %v", got)
		}
		got = append(got, id)
	}
	take() // a0: A goes to the back, behind B and C
	// D waits only now: it comes after the projects waiting since before,
	// A included (served, but waiting again since then).
	q.Add("d0", "D")
	got = append(got, drain(t, q)...)
	want := []string{"a0", "b0", "c0", "a1", "d0", "b1", "a2", "a3", "a4"}
	if !slices.Equal(got, want) {
		t.Fatalf("served %v,\nwant   %v", got, want)
	}
}

// Removing a session (stopped, deleted, started by its own event) does
// not serve its project; a project left with nothing waiting loses its
// turn and queues again at the back.
func TestQueueRemoveKeepsTurns(t *testing.T) {
	t.Parallel()
	q := New()
	q.Add("a0", "A")
	q.Add("a1", "A")
	q.Add("b0", "B")
	q.Remove("a0") // A keeps its turn, first
	q.Remove("b0") // B waits no more
	q.Add("b1", "B")
	q.Add("c0", "C")
	if got, want := drain(t, q), []string{"a1", "b1", "c0"}; !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
	q.Add("c1", "C") // an emptied project waits again
	if id, ok := q.Next(); !ok || id != "c1" {
		t.Fatalf("Next = %q, %v; want c1", id, ok)
	}
}

// BenchmarkQueue serves one session per freed slot with thousands
// waiting across projects (one tenant with most of them): each add, next
// and take costs the same whatever the queue's length. The oldest-first
// queue sorted every waiting session at each freed slot.
func BenchmarkQueue(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			q := New()
			for i := range n {
				proj := "big"
				if i%10 == 0 {
					proj = "p" + strconv.Itoa(i%97)
				}
				q.Add(strconv.Itoa(i), proj)
			}
			b.ReportAllocs()
			i := n
			for b.Loop() {
				id, _ := q.Next()
				q.Take(id)
				q.Add(strconv.Itoa(i), "p"+strconv.Itoa(i%97))
				i++
			}
		})
	}
}
