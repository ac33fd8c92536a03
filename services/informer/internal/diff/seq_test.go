package diff

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func encoded(t *testing.T, s *ambientv1.Session) events.Encoded {
	t.Helper()
	st, err := events.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestChangeCarriesTheLastEventSeq: each change names the stream sequence
// of the object's last event, which its event expects as its subject's
// last: the one loaded (KV, the tail), the one of the last ack, a relist
// keeps it, an unpublishable version (seq 0) does not reset it, and a
// reference-only object (LoadRef) starts from its reference.
func TestChangeCarriesTheLastEventSeq(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.LoadSeqs([]*ambientv1.Session{sess("a", "a1", 1, 0), sess("b", "b1", 1, 0)}, []uint64{7, 0})
	s.LoadRef("ref", "", 9)
	s.Sync([]*ambientv1.Session{sess("a", "a2", 2, 0), sess("b", "b2", 2, 0), sess("ref", "r", 1, 0), sess("new", "n", 1, 0)}, nil)
	for id, want := range map[string]uint64{"a": 7, "b": 0, "ref": 9, "new": 0} {
		c, ok := s.Next(id)
		if !ok || c.Seq != want {
			t.Errorf("%s: Next = %v %v seq %d, want seq %d", id, c.Type, ok, c.Seq, want)
		}
	}
	c, _ := s.Next("a")
	s.PublishedAt(c, 12)
	s.Apply(upd(sess("a", "a3", 3, 0)))
	if c, _ = s.Next("a"); c.Seq != 12 {
		t.Fatalf("after the ack at 12: seq %d", c.Seq)
	}
	s.Published(c) // unpublishable: nothing reached the stream
	s.Apply(upd(sess("a", "a4", 4, 0)))
	if c, _ = s.Next("a"); c.Seq != 12 {
		t.Fatalf("after an unpublishable version: seq %d, want 12 still", c.Seq)
	}
	s.Sync([]*ambientv1.Session{sess("a", "a4", 4, 0)}, nil)
	if c, _ = s.Next("a"); c.Seq != 12 {
		t.Fatalf("after a relist: seq %d, want 12 still", c.Seq)
	}
}

// TestAdopt: another publisher's last event becomes the published state
// and the sequence the next change follows; a DELETED adopted makes the
// object's next change an ADDED (or nothing, when it is gone here too);
// AdoptSeq keeps the published state.
func TestAdopt(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.LoadSeqs([]*ambientv1.Session{sess("a", "a1", 1, 0), sess("b", "b1", 1, 0)}, []uint64{3, 4})
	s.Apply(upd(sess("a", "a3", 3, 0)))
	if !s.Adopt("a", encoded(t, sess("a", "foreign", 2, 0)), 10) {
		t.Fatal("Adopt: not dirty, want a change from the foreign state to a3")
	}
	c, ok := s.Next("a")
	if !ok || c.Type != eventsv1.EventType_EVENT_TYPE_MODIFIED || name(t, c.Old) != "foreign" || name(t, c.New) != "a3" || c.Seq != 10 {
		t.Fatalf("Next after Adopt = %v %v old %q seq %d", c.Type, ok, name(t, c.Old), c.Seq)
	}
	if s.Adopt("a", encoded(t, sess("a", "a3", 3, 0)), 11) {
		t.Fatal("Adopt of the desired state: still dirty")
	}

	s.Adopt("b", events.Encoded{}, 12) // a DELETED
	if c, ok := s.Next("b"); !ok || c.Type != eventsv1.EventType_EVENT_TYPE_ADDED || c.Seq != 12 {
		t.Fatalf("Next after an adopted DELETED = %v %v seq %d, want ADDED at 12", c.Type, ok, c.Seq)
	}
	s.Apply(del("b"))
	if s.Adopt("b", events.Encoded{}, 12) {
		t.Fatal("deleted on both sides: still dirty")
	}
	if _, ok := s.PublishedState("b"); ok {
		t.Fatal("b still published after an adopted DELETED")
	}

	s.Apply(upd(sess("a", "a5", 5, 0)))
	s.AdoptSeq("a", 0) // aged out of the stream
	if c, _ := s.Next("a"); c.Seq != 0 || name(t, c.Old) != "a3" {
		t.Fatalf("after AdoptSeq: seq %d old %q, want 0 and a3", c.Seq, name(t, c.Old))
	}
}

// TestReferenceEventTellsTheObjectExists: an object whose last event is a
// reference event (LoadRef, AdoptRef) is known to consumers: its next
// change is a MODIFIED without an old object, or nothing to publish while
// it is the version the reference named (Announced), never a second
// ADDED; a replayed dead letter (version "") of an object the store holds
// no state of makes a MODIFIED too, of one it holds only moves the
// sequence; a reference-only object deleted after its state was seen is
// announced as DELETED.
func TestReferenceEventTellsTheObjectExists(t *testing.T) {
	t.Parallel()
	type want struct {
		typ       eventsv1.EventType
		name, old string
		seq       uint64
		announced bool
	}
	check := func(s *Store[*ambientv1.Session], id string, w want) Change[*ambientv1.Session] {
		t.Helper()
		c, ok := s.Next(id)
		if !ok || c.Type != w.typ || name(t, c.New) != w.name || name(t, c.Old) != w.old || c.Seq != w.seq || c.Announced != w.announced {
			t.Fatalf("%s: Next = %v %v new %q old %q seq %d announced %v, want %+v", id, c.Type, ok, name(t, c.New), name(t, c.Old), c.Seq, c.Announced, w)
		}
		return c
	}
	version := func(o *ambientv1.Session) string { return encoded(t, o).Version() }
	modified := eventsv1.EventType_EVENT_TYPE_MODIFIED

	s := NewStore[*ambientv1.Session]()
	s.LoadSeqs([]*ambientv1.Session{sess("kv", "kv1", 1, 0), sess("replayed", "rp1", 1, 0)}, []uint64{3, 4})
	s.LoadRef("ref", version(sess("ref", "r2", 2, 0)), 9)          // KV never held it
	s.LoadRef("kv", version(sess("kv", "kv2", 2, 0)), 10)          // KV holds an older state
	s.LoadRef("changed", version(sess("changed", "c1", 1, 0)), 11) // changed since
	s.LoadRef("copy", "", 12)                                      // a replayed dead letter
	s.LoadRef("replayed", "", 13)                                  // the same, of a published state
	s.LoadRef("gone", version(sess("gone", "g1", 1, 0)), 14)       // deleted before this list
	s.LoadRef("deleted", version(sess("deleted", "d1", 1, 0)), 15) // deleted after it
	s.Sync([]*ambientv1.Session{
		sess("ref", "r2", 2, 0), sess("kv", "kv2", 2, 0), sess("changed", "c2", 2, 0), sess("copy", "cp", 1, 0),
		sess("replayed", "rp2", 2, 0), sess("deleted", "d1", 1, 0),
	}, nil)

	c := check(s, "ref", want{typ: modified, name: "r2", seq: 9, announced: true})
	if s.PublishedAt(c, 0) {
		t.Fatal("ref: still dirty after its announced version was recorded")
	}
	if st, seq, ok := s.PublishedSeq("ref"); !ok || name(t, st) != "r2" || seq != 9 {
		t.Fatalf("ref: published %q seq %d %v, want r2 at 9", name(t, st), seq, ok)
	}
	s.Apply(upd(sess("ref", "r3", 3, 0)))
	check(s, "ref", want{typ: modified, name: "r3", old: "r2", seq: 9})

	check(s, "kv", want{typ: modified, name: "kv2", seq: 10, announced: true})
	check(s, "changed", want{typ: modified, name: "c2", seq: 11})
	check(s, "copy", want{typ: modified, name: "cp", seq: 12})
	check(s, "replayed", want{typ: modified, name: "rp2", old: "rp1", seq: 13})
	if _, ok := s.Next("gone"); ok {
		t.Fatal("gone: a change without any state of it")
	}
	s.Apply(del("deleted"))
	check(s, "deleted", want{typ: eventsv1.EventType_EVENT_TYPE_DELETED, name: "d1", seq: 15})

	// Adopted from a refused publish: the same.
	c = check(s, "changed", want{typ: modified, name: "c2", seq: 11})
	s.PublishedAt(c, 20)
	s.Apply(upd(sess("changed", "c3", 3, 0)))
	if !s.AdoptRef("changed", version(sess("changed", "c3", 3, 0)), 21) {
		t.Fatal("AdoptRef: not dirty")
	}
	check(s, "changed", want{typ: modified, name: "c3", seq: 21, announced: true})
	s.AdoptRef("changed", "", 22) // a replay: the published state stands
	check(s, "changed", want{typ: modified, name: "c3", seq: 22, announced: true})
	s.Adopt("changed", encoded(t, sess("changed", "c4", 4, 0)), 23)
	check(s, "changed", want{typ: modified, name: "c3", old: "c4", seq: 23})
}
