package diff

import (
	"maps"
	"testing"
	"unsafe"

	"github.com/ambient-code/control-plane/libs/events"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// checkInterned fails unless s's interned project ids are exactly the
// project ids its entries' desired and published states hold, each
// counted once per state, and every state holds the interned copy.
func checkInterned(t *testing.T, s *Store[*ambientv1.Session], when string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]int{}
	for id, e := range s.entries {
		for _, st := range []events.Encoded{e.desired, e.published} {
			if st.ProjectID == "" {
				continue
			}
			want[st.ProjectID]++
			if in, ok := s.projects[st.ProjectID]; ok && unsafe.StringData(in.id) != unsafe.StringData(st.ProjectID) {
				t.Errorf("%s: %s holds a copy of project id %q, not the interned one", when, id, st.ProjectID)
			}
		}
	}
	got := map[string]int{}
	for p, in := range s.projects {
		got[p] = in.refs
	}
	if !maps.Equal(got, want) {
		t.Fatalf("%s: interned project ids %v, want %v", when, got, want)
	}
}

// TestInternedProjectCounts drives every way a state enters or leaves
// the store (load, watch, listing, publish, adopt, delete, a move between
// projects) and checks after each step that the interned ids count
// exactly the states that hold them, and that states share one copy.
func TestInternedProjectCounts(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.LoadKV([]*ambientv1.Session{inProject("a", "a1", "p", 1), inProject("b", "b1", "p", 1), inProject("c", "c1", "q", 1)}, nil, nil)
	checkInterned(t, s, "load")

	r := s.Apply(upd(inProject("a", "a2", "p", 2)))
	checkInterned(t, s, "update")
	publishAll(s, r)
	checkInterned(t, s, "update published")

	r = s.Apply(upd(inProject("b", "b2", "r", 2)))
	checkInterned(t, s, "move")
	publishAll(s, r)
	checkInterned(t, s, "move published")

	r = s.Apply(del("c"))
	checkInterned(t, s, "delete")
	publishAll(s, r)
	checkInterned(t, s, "delete published")

	// A listing: a changed, d new, b gone.
	r = s.Sync([]*ambientv1.Session{inProject("a", "a3", "p", 3), inProject("d", "d1", "q", 3)}, nil)
	checkInterned(t, s, "listing")
	publishAll(s, r)
	checkInterned(t, s, "listing published")

	// Another publisher's event adopted: a state of another project, then
	// a delete.
	other, err := events.Encode(inProject("a", "a4", "s", 4))
	if err != nil {
		t.Fatal(err)
	}
	s.Adopt("a", other, 7)
	checkInterned(t, s, "adopt")
	publishAll(s, Result{Dirty: []string{"a"}})
	checkInterned(t, s, "adopt published over")
	s.Adopt("d", events.Encoded{}, 8)
	checkInterned(t, s, "adopt delete")

	// A reference event: the delete announces the last state seen.
	s.Apply(upd(inProject("e", "e1", "t", 5)))
	s.AdoptRef("e", "", 9)
	s.Apply(del("e"))
	checkInterned(t, s, "delete after a reference")
	publishAll(s, Result{Dirty: []string{"e"}})
	checkInterned(t, s, "delete after a reference published")

	// Two copies of one project id from two decodes share one.
	s.Apply(upd(inProject("f", "f1", string([]byte("shared")), 6)))
	s.Apply(upd(inProject("g", "g1", string([]byte("shared")), 6)))
	checkInterned(t, s, "shared")

	s.LoadKV(nil, nil, nil)
	checkInterned(t, s, "load of nothing")
}
