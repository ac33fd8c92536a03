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
// reference-only object (LoadSeq) starts from its reference.
func TestChangeCarriesTheLastEventSeq(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.LoadSeqs([]*ambientv1.Session{sess("a", "a1", 1, 0), sess("b", "b1", 1, 0)}, []uint64{7, 0})
	s.LoadSeq("ref", 9)
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
