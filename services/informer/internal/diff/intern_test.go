package diff

import (
	"fmt"
	"testing"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// inProject is session id named name at us, in project p.
func inProject(id, name, p string, us int) *ambientv1.Session {
	o := sess(id, name, us, 0)
	o.ProjectId = ptrTo(p)
	return o
}

// publishAll publishes what r made dirty.
func publishAll(s *Store[*ambientv1.Session], r Result) {
	for _, id := range r.Dirty {
		if c, ok := s.Next(id); ok {
			s.PublishedAt(c, 1)
		}
	}
}

// internedIDs is the number of project ids s keeps interned.
func internedIDs(s *Store[*ambientv1.Session]) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.projects)
}

// TestInternedProjectsGoWithTheirObjects: a leader's term lasts weeks;
// sessions name any project_id (the API does not check it) and projects
// come and go. Once every object of a project is deleted and published as
// deleted, the store no longer keeps its id: the watch's deletes, a
// listing that no longer shows them, and a move to another project.
func TestInternedProjectsGoWithTheirObjects(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	const n = 1000
	for i := range n {
		o := inProject(fmt.Sprintf("s%d", i), "x", fmt.Sprintf("ephemeral-%d", i), i)
		publishAll(s, s.Apply(upd(o)))
		publishAll(s, s.Apply(del(ID(o))))
	}
	if s.Len() != 0 {
		t.Fatalf("store holds %d objects, want 0", s.Len())
	}
	if kept := internedIDs(s); kept != 0 {
		t.Fatalf("store keeps %d interned project ids of %d deleted objects, want 0", kept, n)
	}

	// Listed, then gone from the next list.
	listed := make([]*ambientv1.Session, 0, n)
	for i := range n {
		listed = append(listed, inProject(fmt.Sprintf("l%d", i), "x", fmt.Sprintf("listed-%d", i), i))
	}
	publishAll(s, s.Sync(listed, nil))
	if kept := internedIDs(s); kept != n {
		t.Fatalf("store keeps %d interned project ids of %d listed objects, want %d", kept, n, n)
	}
	publishAll(s, s.Sync(listed[:1], nil))
	if kept := internedIDs(s); kept != 1 {
		t.Fatalf("store keeps %d interned project ids after the list kept one object, want 1", kept)
	}

	// Moved to another project: the old id stays while consumers have the
	// object there (published), and goes once the move is published.
	moved := inProject("l0", "x", "elsewhere", n+1)
	r := s.Apply(upd(moved))
	if kept := internedIDs(s); kept != 2 {
		t.Fatalf("store keeps %d interned project ids while a move is pending, want 2", kept)
	}
	publishAll(s, r)
	if kept := internedIDs(s); kept != 1 {
		t.Fatalf("store keeps %d interned project ids after the move was published, want 1", kept)
	}
}
