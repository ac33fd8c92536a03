package diff

import (
	"testing"
	"unsafe"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestWatchEventsApplyInStreamOrder: updated_at is stamped from the wall
// clock of the API replica that wrote the object, and the real server sends
// the events of one stream in order, each with the object as read when it
// is sent. An update stamped earlier than the one before it (the clock
// stepped back, or another replica's clock is behind) is still the newer
// state. The store used to drop such events as stale: consumers kept the
// old state until the next relist.
func TestWatchEventsApplyInStreamOrder(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.Sync([]*ambientv1.Session{sess("a", "a1", 100, 0)}, nil)
	c, _ := s.Next("a")
	s.Published(c)
	var stale, backward int
	for _, ob := range []Observed[*ambientv1.Session]{
		upd(sess("a", "a2", 200, 0)),
		upd(sess("a", "a3", 50, 0)), // the clock stepped back
		upd(sess("a", "a4", 10, 0)), // and again
	} {
		r := s.Apply(ob)
		stale += r.Stale
		backward += r.Backward
	}
	if stale != 0 || backward != 2 {
		t.Errorf("stale, backward = %d, %d; want 0, 2", stale, backward)
	}
	got, ok := s.Next("a")
	if !ok || got.Type != eventsv1.EventType_EVENT_TYPE_MODIFIED || name(t, got.New) != "a4" || name(t, got.Old) != "a1" {
		var n string
		if ok {
			n = name(t, got.New)
		}
		t.Fatalf("Next = %v %q (ok %v), want MODIFIED to the last event's a4", got.Type, n, ok)
	}
}

// TestListAndWatchOrder: a listed state and a watch event are ordered by
// when the API read them wherever the store knows it (a state read before
// a stream opened, before a listing began, or earlier in the same
// listing), whatever their updated_at; updated_at decides only where a
// listing and the watch of one stream meet with no known order.
func TestListAndWatchOrder(t *testing.T) {
	t.Parallel()
	type run func(s *Store[*ambientv1.Session]) []Result
	list := func(s *Store[*ambientv1.Session], objs ...*ambientv1.Session) Result { return s.Sync(objs, nil) }
	tests := []struct {
		name            string
		run             run
		want            string // name of a's desired state
		stale, backward int
	}{
		{
			// The residual case: the event may have been read before the
			// page and arrive after it (or the clock that stamped it is
			// behind); nothing tells which.
			name: "a state listed on the open stream meets an event stamped earlier: dropped",
			run: func(s *Store[*ambientv1.Session]) []Result {
				s.StreamOpened()
				return []Result{list(s, sess("a", "a2", 200, 0)), s.Apply(upd(sess("a", "a1", 100, 0)))}
			},
			want: "a2", stale: 1,
		},
		{
			// The clock stays behind: the object's own event, arriving
			// while the next listing reads it, is dropped again, and the
			// listing's state wins over the earlier listing's.
			name: "the next listing ends the residual case",
			run: func(s *Store[*ambientv1.Session]) []Result {
				s.StreamOpened()
				rs := []Result{list(s, sess("a", "a1", 200, 0)), s.Apply(upd(sess("a", "a2", 100, 0)))}
				l := s.StartList()
				l.Add([]*ambientv1.Session{sess("a", "a3", 110, 0)})
				return append(rs, s.Apply(upd(sess("a", "a3", 110, 0))), l.Finish(nil))
			},
			want: "a3", stale: 2,
		},
		{
			name: "a new stream's event replaces a state listed before it opened",
			run: func(s *Store[*ambientv1.Session]) []Result {
				s.StreamOpened()
				r := list(s, sess("a", "a2", 200, 0))
				s.StreamOpened() // reconnect
				return []Result{r, s.Apply(upd(sess("a", "a3", 100, 0)))}
			},
			want: "a3", backward: 1,
		},
		{
			// After a restart: KV's state was read before this process
			// started, and a relist that finds it unchanged read nothing
			// newer.
			name: "an event replaces a loaded state a relist found unchanged",
			run: func(s *Store[*ambientv1.Session]) []Result {
				s.Load([]*ambientv1.Session{sess("a", "a2", 200, 0)})
				s.StreamOpened()
				return []Result{list(s, sess("a", "a2", 200, 0)), s.Apply(upd(sess("a", "a3", 100, 0)))}
			},
			want: "a3", backward: 1,
		},
		{
			// A duplicate of the last event, read before the clock stepped
			// back and arriving during the listing, touches the id; the page
			// read after it still wins.
			name: "a listing replaces a watch state that arrived before it",
			run: func(s *Store[*ambientv1.Session]) []Result {
				s.StreamOpened()
				rs := []Result{list(s, sess("a", "a1", 100, 0)), s.Apply(upd(sess("a", "a2", 200, 0)))}
				l := s.StartList()
				l.Add([]*ambientv1.Session{sess("a", "a3", 50, 0)})
				rs = append(rs, s.Apply(upd(sess("a", "a2", 200, 0))), l.Finish(nil))
				return append(rs, s.Apply(upd(sess("a", "a3", 50, 0)))) // a3's own event
			},
			want: "a3", stale: 2,
		},
		{
			// An updated row moves to the end of the server's order and
			// comes again on a later page, read later.
			name: "a listing keeps the copy it read last",
			run: func(s *Store[*ambientv1.Session]) []Result {
				l := s.StartList()
				l.Add([]*ambientv1.Session{sess("a", "a1", 100, 0)})
				l.Add([]*ambientv1.Session{sess("a", "a2", 50, 0)})
				return []Result{l.Finish(nil)}
			},
			want: "a2",
		},
		{
			name: "an event during the listing stamped after its page wins",
			run: func(s *Store[*ambientv1.Session]) []Result {
				s.StreamOpened()
				rs := []Result{list(s, sess("a", "a1", 100, 0))}
				l := s.StartList()
				l.Add([]*ambientv1.Session{sess("a", "a2", 200, 0)})
				return append(rs, s.Apply(upd(sess("a", "a3", 300, 0))), l.Finish(nil))
			},
			want: "a3",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewStore[*ambientv1.Session]()
			var stale, backward int
			for _, r := range tc.run(s) {
				stale += r.Stale
				backward += r.Backward
			}
			if o, ok := s.Get("a"); !ok || o.GetName() != tc.want {
				t.Errorf("a = %q (present %v), want %q", o.GetName(), ok, tc.want)
			}
			if stale != tc.stale || backward != tc.backward {
				t.Errorf("stale, backward = %d, %d; want %d, %d", stale, backward, tc.stale, tc.backward)
			}
		})
	}
}

// TestEntryFitsItsSizeClass: the store holds one entry per object (100,000
// and more); an entry over 160 bytes would take the allocator's next size
// class, 176.
func TestEntryFitsItsSizeClass(t *testing.T) {
	t.Parallel()
	if n := unsafe.Sizeof(entry{}); n > 160 {
		t.Fatalf("entry is %d bytes, want at most 160", n)
	}
}
