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
		id, ok := q.Next(nil)
		if !ok {
			return out
		}
		if _, ok := q.Take(id); !ok {
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
	if _, ok := q.Take("b"); ok {
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
		id, ok := q.Next(nil)
		if _, taken := q.Take(id); !ok || !taken {
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
	if id, ok := q.Next(nil); !ok || id != "c1" {
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
				id, _ := q.Next(nil)
				q.Take(id)
				q.Add(strconv.Itoa(i), "p"+strconv.Itoa(i%97))
				i++
			}
		})
	}
}

// Next passes over the projects full reports (at their cap), and they keep
// their turn: served first once they have room again.
func TestQueueNextPassesOverFullProjects(t *testing.T) {
	t.Parallel()
	q := New()
	q.Add("a0", "A")
	q.Add("a1", "A")
	q.Add("b0", "B")
	q.Add("b1", "B")
	full := map[string]bool{"A": true}
	next := func() string {
		t.Helper()
		id, ok := q.Next(func(p string) bool { return full[p] })
		if !ok {
			return ""
		}
		if _, ok := q.Take(id); !ok {
			t.Fatalf("Next gave %s, which Take does not find", id)
		}
		return id
	}
	if got := next(); got != "b0" {
		t.Fatalf("A full: served %q, want b0", got)
	}
	full["B"] = true
	if id, ok := q.Next(func(p string) bool { return full[p] }); ok {
		t.Fatalf("every project full: Next gave %s", id)
	}
	full["A"], full["B"] = false, false
	if got := next(); got != "a0" {
		t.Fatalf("A has room again: served %q, want a0 (A kept its turn)", got)
	}
	if got := next(); got != "b1" {
		t.Fatalf("served %q, want b1", got)
	}
	if p, ok := q.ProjectOf("a1"); !ok || p != "A" {
		t.Fatalf("ProjectOf(a1) = %q, %v; want A, true", p, ok)
	}
	if _, ok := q.ProjectOf("b0"); ok {
		t.Fatal("ProjectOf(b0) found a session already taken")
	}
}

// SetProject moves a waiting session to the back of its new project's
// sessions; its old project, left with nothing waiting, loses its turn.
func TestQueueSetProject(t *testing.T) {
	t.Parallel()
	q := New()
	q.Add("a0", "A")
	q.Add("b0", "B")
	q.Add("b1", "B")
	q.SetProject("a0", "B")
	q.SetProject("never-queued", "B")
	if p, ok := q.ProjectOf("a0"); !ok || p != "B" {
		t.Fatalf("ProjectOf(a0) = %q, %v; want B, true", p, ok)
	}
	if q.Has("never-queued") {
		t.Fatal("SetProject queued a session that was not waiting")
	}
	got := drain(t, q)
	if want := []string{"b0", "b1", "a0"}; !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
}
