package diff

import (
	"slices"
	"testing"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestStateOfALostStreamIsAnnounced: entries of an events stream lost
// since (LoadLost) are states consumers of that stream may hold and this
// one never carried. The first listing publishes each object the API
// holds as ADDED (also one unchanged since), and each it does not hold as
// DELETED of the loaded state, all expecting no earlier event of the
// subject; each change's KV write expects the loaded revision. An id the
// tail brought a state of keeps it. Once published, nothing is left.
func TestStateOfALostStreamIsAnnounced(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.LoadKV([]*ambientv1.Session{inProject("tail", "t2", "p", 2)}, []uint64{3}, []uint64{0})
	for i, o := range []*ambientv1.Session{inProject("same", "s1", "p", 1), inProject("changed", "c1", "p", 1), inProject("gone", "g1", "q", 1), inProject("tail", "t1", "p", 1)} {
		if !s.LoadLost(o, uint64(10+i)) {
			t.Fatalf("LoadLost(%s) failed", o.GetMetadata().GetId())
		}
	}
	checkInterned(t, s, "load")
	r := s.Sync([]*ambientv1.Session{inProject("same", "s1", "p", 1), inProject("changed", "c2", "p", 2), inProject("tail", "t2", "p", 2)}, nil)
	checkInterned(t, s, "listing")
	slices.Sort(r.Dirty)
	if want := []string{"changed", "gone", "same"}; !slices.Equal(r.Dirty, want) {
		t.Fatalf("dirty after the listing: %v, want %v", r.Dirty, want)
	}
	want := map[string]struct {
		typ  eventsv1.EventType
		name string
		rev  uint64
	}{
		"same":    {eventsv1.EventType_EVENT_TYPE_ADDED, "s1", 10},
		"changed": {eventsv1.EventType_EVENT_TYPE_ADDED, "c2", 11},
		"gone":    {eventsv1.EventType_EVENT_TYPE_DELETED, "g1", 12},
	}
	for id, w := range want {
		c, ok := s.Next(id)
		if !ok || c.Type != w.typ || name(t, c.New) != w.name || c.Seq != 0 || c.Old.Raw != nil {
			t.Errorf("%s: Next = %v %v %q seq %d (old %v), want %v %q seq 0 without an old state", id, ok, c.Type, name(t, c.New), c.Seq, c.Old.Raw != nil, w.typ, w.name)
		}
		if rev := s.KVRev(id); rev != w.rev {
			t.Errorf("%s: KV revision %d, want %d (the lost stream's entry)", id, rev, w.rev)
		}
	}
	if c, ok := s.Next("tail"); ok {
		t.Errorf("tail: Next = %v %q, want nothing: the tail's state is in this stream", c.Type, name(t, c.New))
	}
	if rev := s.KVRev("tail"); rev != 13 {
		t.Errorf("tail: KV revision %d, want 13", rev)
	}
	publishAll(s, r)
	checkInterned(t, s, "published")
	for id := range want {
		if c, ok := s.Next(id); ok {
			t.Errorf("%s: Next = %v after publishing, want nothing", id, c.Type)
		}
	}
	if _, ok := s.PublishedState("gone"); ok {
		t.Errorf("gone: still published after its DELETED")
	}
}
