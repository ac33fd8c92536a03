package diff

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// sess builds a session updated at base+us microseconds (plus extra nanos).
func sess(id, name string, us int, nanos int) *ambientv1.Session {
	t := base.Add(time.Duration(us)*time.Microsecond + time.Duration(nanos))
	return &ambientv1.Session{
		Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(t), CreatedAt: timestamppb.New(base)},
		Name:     name,
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   *ambientv1.Session
		want *ambientv1.Session
	}{
		{name: "micros unchanged", in: sess("a", "x", 1, 0), want: sess("a", "x", 1, 0)},
		{name: "updated_at nanos dropped", in: sess("a", "x", 1, 789), want: sess("a", "x", 1, 0)},
		{name: "nested optional timestamp", in: func() *ambientv1.Session {
			s := sess("a", "x", 1, 0)
			s.StartTime = timestamppb.New(base.Add(5*time.Microsecond + 999))
			return s
		}(), want: func() *ambientv1.Session {
			s := sess("a", "x", 1, 0)
			s.StartTime = timestamppb.New(base.Add(5 * time.Microsecond))
			return s
		}()},
		{name: "nil metadata", in: &ambientv1.Session{Name: "x"}, want: &ambientv1.Session{Name: "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			Normalize(tc.in)
			if !proto.Equal(tc.in, tc.want) {
				t.Fatalf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}

type step struct {
	list     []*ambientv1.Session // when non-nil (or sync set), a Sync
	sync     bool
	buffered []Observed[*ambientv1.Session]
	apply    *Observed[*ambientv1.Session]
}

func ptrTo[T any](v T) *T { return &v }

func upd(s *ambientv1.Session) Observed[*ambientv1.Session] {
	return Observed[*ambientv1.Session]{ID: ID(s), Object: s}
}

func del(id string) Observed[*ambientv1.Session] {
	return Observed[*ambientv1.Session]{ID: id, Deleted: true}
}

func ptr[T any](v T) *T { return &v }

// TestStoreChanges drives the store like the informer does and checks which
// events a worker would publish afterwards.
func TestStoreChanges(t *testing.T) {
	t.Parallel()
	type want struct {
		typ  eventsv1.EventType
		name string // of Object
		old  string // of Old, "" when none
	}
	tests := []struct {
		name    string
		kv      []*ambientv1.Session
		steps   []step
		want    map[string]want
		stale   int
		unknown int
	}{
		{
			name:  "initial list adds everything",
			steps: []step{{sync: true, list: []*ambientv1.Session{sess("a", "a1", 1, 0), sess("b", "b1", 1, 0)}}},
			want: map[string]want{
				"a": {typ: eventsv1.EventType_EVENT_TYPE_ADDED, name: "a1"},
				"b": {typ: eventsv1.EventType_EVENT_TYPE_ADDED, name: "b1"},
			},
		},
		{
			name:  "restart with KV equal to list publishes nothing",
			kv:    []*ambientv1.Session{sess("a", "a1", 1, 0)},
			steps: []step{{sync: true, list: []*ambientv1.Session{sess("a", "a1", 1, 0)}}},
			want:  map[string]want{},
		},
		{
			name: "restart: modified, deleted, added",
			kv:   []*ambientv1.Session{sess("a", "a1", 1, 0), sess("b", "b1", 1, 0)},
			steps: []step{{sync: true, list: []*ambientv1.Session{
				sess("a", "a2", 2, 0), sess("c", "c1", 1, 0),
			}}},
			want: map[string]want{
				"a": {typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, name: "a2", old: "a1"},
				"b": {typ: eventsv1.EventType_EVENT_TYPE_DELETED, name: "b1"},
				"c": {typ: eventsv1.EventType_EVENT_TYPE_ADDED, name: "c1"},
			},
		},
		{
			// updated_at is the only change marker and has microseconds:
			// two writes within one microsecond differ only in content.
			// Losing a real change is worse than publishing a doubtful one.
			name: "same microsecond, other content: the event wins",
			kv:   []*ambientv1.Session{sess("a", "a1", 1, 0)},
			steps: []step{
				{sync: true, list: []*ambientv1.Session{sess("a", "a1", 1, 0)}},
				{apply: ptrTo(upd(sess("a", "a2", 1, 0)))},
			},
			want: map[string]want{"a": {typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, name: "a2", old: "a1"}},
		},
		{
			// The same for a relist: the cache (from KV after a restart, or
			// from the last list) holds a1 and the list shows other content
			// with the same microsecond.
			name:  "same microsecond, other content in a relist: the list wins",
			kv:    []*ambientv1.Session{sess("a", "a1", 1, 0)},
			steps: []step{{sync: true, list: []*ambientv1.Session{sess("a", "a2", 1, 0)}}},
			want:  map[string]want{"a": {typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, name: "a2", old: "a1"}},
		},
		{
			name: "buffered events older than the list are dropped",
			steps: []step{{sync: true,
				list:     []*ambientv1.Session{sess("a", "a2", 2, 0)},
				buffered: []Observed[*ambientv1.Session]{upd(sess("a", "a1", 1, 0))},
			}},
			want:  map[string]want{"a": {typ: eventsv1.EventType_EVENT_TYPE_ADDED, name: "a2"}},
			stale: 1,
		},
		{
			name: "object created during the list is added from the buffer",
			steps: []step{{sync: true,
				list:     []*ambientv1.Session{sess("a", "a1", 1, 0)},
				buffered: []Observed[*ambientv1.Session]{upd(sess("n", "n1", 3, 0))},
			}},
			want: map[string]want{
				"a": {typ: eventsv1.EventType_EVENT_TYPE_ADDED, name: "a1"},
				"n": {typ: eventsv1.EventType_EVENT_TYPE_ADDED, name: "n1"},
			},
		},
		{
			name: "delete during the list wins over the listed object",
			kv:   []*ambientv1.Session{sess("a", "a1", 1, 0)},
			steps: []step{{sync: true,
				list:     []*ambientv1.Session{sess("a", "a1", 1, 0)},
				buffered: []Observed[*ambientv1.Session]{del("a")},
			}},
			want: map[string]want{"a": {typ: eventsv1.EventType_EVENT_TYPE_DELETED, name: "a1"}},
		},
		{
			name: "update equal to cache publishes nothing, even with nanos",
			kv:   []*ambientv1.Session{sess("a", "a1", 1, 0)},
			steps: []step{
				{sync: true, list: []*ambientv1.Session{sess("a", "a1", 1, 0)}},
				{apply: ptr(upd(sess("a", "a1", 1, 456)))},
			},
			want:  map[string]want{},
			stale: 1,
		},
		{
			// The real server reads the object when it sends the event: a
			// burst ends with duplicates of the last state. One stream
			// never brings an older state after a newer one (events apply
			// in stream order: TestWatchEventsApplyInStreamOrder).
			name: "burst of updates coalesces to the last",
			kv:   []*ambientv1.Session{sess("a", "a1", 1, 0)},
			steps: []step{
				{sync: true, list: []*ambientv1.Session{sess("a", "a1", 1, 0)}},
				{apply: ptr(upd(sess("a", "a2", 2, 0)))},
				{apply: ptr(upd(sess("a", "a3", 3, 0)))},
				{apply: ptr(upd(sess("a", "a3", 3, 0)))}, // duplicate
			},
			want:  map[string]want{"a": {typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, name: "a3", old: "a1"}},
			stale: 1,
		},
		{
			name: "unknown delete is ignored",
			steps: []step{
				{sync: true},
				{apply: ptr(del("zz"))},
			},
			want:    map[string]want{},
			unknown: 1,
		},
		{
			name: "create then delete before publishing publishes nothing",
			steps: []step{
				{sync: true},
				{apply: ptr(upd(sess("a", "a1", 1, 0)))},
				{apply: ptr(del("a"))},
			},
			want: map[string]want{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewStore[*ambientv1.Session]()
			s.Load(tc.kv)
			var stale, unknown int
			for _, st := range tc.steps {
				var r Result
				if st.apply != nil {
					r = s.Apply(*st.apply)
				} else {
					r = s.Sync(st.list, st.buffered)
				}
				stale += r.Stale
				unknown += r.Unknown
			}
			if stale != tc.stale || unknown != tc.unknown {
				t.Errorf("stale, unknown = %d, %d; want %d, %d", stale, unknown, tc.stale, tc.unknown)
			}
			got := map[string]want{}
			for _, id := range []string{"a", "b", "c", "n", "zz"} {
				c, ok := s.Next(id)
				if !ok {
					continue
				}
				w := want{typ: c.Type, name: name(t, c.New)}
				if c.Old.Raw != nil {
					w.old = name(t, c.Old)
				}
				got[id] = w
			}
			if len(got) != len(tc.want) {
				t.Fatalf("changes = %v, want %v", got, tc.want)
			}
			for id, w := range tc.want {
				if got[id] != w {
					t.Errorf("change %s = %+v, want %+v", id, got[id], w)
				}
			}
		})
	}
}

func TestStorePublishedClearsAndRedirties(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	r := s.Sync([]*ambientv1.Session{sess("a", "a1", 1, 0)}, nil)
	if !slices.Equal(r.Dirty, []string{"a"}) {
		t.Fatalf("dirty = %v, want [a]", r.Dirty)
	}
	c, _ := s.Next("a")
	// A newer update arrives while c is being published.
	if r := s.Apply(upd(sess("a", "a2", 2, 0))); len(r.Dirty) != 1 {
		t.Fatalf("apply dirty = %v", r.Dirty)
	}
	if still := s.Published(c); !still {
		t.Fatal("Published = false, want still dirty after concurrent update")
	}
	c2, ok := s.Next("a")
	if !ok || c2.Type != eventsv1.EventType_EVENT_TYPE_MODIFIED || name(t, c2.Old) != "a1" || name(t, c2.New) != "a2" {
		t.Fatalf("Next = %+v, %v", c2, ok)
	}
	if s.Published(c2) {
		t.Fatal("still dirty after publishing the latest")
	}
	s.Apply(del("a"))
	c3, _ := s.Next("a")
	if c3.Type != eventsv1.EventType_EVENT_TYPE_DELETED || name(t, c3.New) != "a2" {
		t.Fatalf("Next after delete = %+v", c3)
	}
	s.Published(c3)
	if _, ok := s.Next("a"); ok || s.Len() != 0 {
		t.Fatalf("entry should be gone, Len = %d", s.Len())
	}
}

func BenchmarkStoreSync100k(b *testing.B) {
	list := make([]*ambientv1.Session, 100_000)
	kv := make([]*ambientv1.Session, len(list))
	for i := range list {
		list[i] = sess(fmt.Sprintf("2k%022d", i), "n", i, 0)
		list[i].Prompt = proto.String("a prompt of a few words")
		kv[i] = proto.CloneOf(list[i])
	}
	b.ReportAllocs()
	for b.Loop() {
		s := NewStore[*ambientv1.Session]()
		s.Load(kv)
		if r := s.Sync(list, nil); len(r.Dirty) != 0 {
			b.Fatalf("dirty = %d", len(r.Dirty))
		}
	}
}

// TestStoreChangeDuringPublish: a change that arrives while an event of the
// same object is in flight, and that does not look dirty against the
// published state of that moment, must still be published: Published
// reports the id dirty again. Before the fix, a session deleted while its
// ADDED was being published stayed in the consumers' view (and KV) until
// the next resync.
func TestStoreChangeDuringPublish(t *testing.T) {
	t.Parallel()
	added := sess("a", "x", 1, 0)
	tests := []struct {
		name   string
		during func(s *Store[*ambientv1.Session])
		want   eventsv1.EventType
	}{
		{name: "deleted while ADDED in flight", want: eventsv1.EventType_EVENT_TYPE_DELETED, during: func(s *Store[*ambientv1.Session]) {
			if r := s.Apply(Observed[*ambientv1.Session]{ID: "a", Deleted: true}); len(r.Dirty) != 0 {
				t.Logf("delete looked dirty: %v", r.Dirty)
			}
		}},
		{name: "dropped by a relist while ADDED in flight", want: eventsv1.EventType_EVENT_TYPE_DELETED, during: func(s *Store[*ambientv1.Session]) {
			s.Sync(nil, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewStore[*ambientv1.Session]()
			s.Apply(Observed[*ambientv1.Session]{ID: "a", Object: added})
			c, ok := s.Next("a")
			if !ok || c.Type != eventsv1.EventType_EVENT_TYPE_ADDED {
				t.Fatalf("Next = %v %v, want ADDED", c.Type, ok)
			}
			tc.during(s)
			if !s.Published(c) {
				t.Fatal("Published did not report the change made while the event was in flight")
			}
			next, ok := s.Next("a")
			if !ok || next.Type != tc.want {
				t.Fatalf("Next after publish = %v %v, want %v", next.Type, ok, tc.want)
			}
		})
	}
}

// name decodes an encoded session and returns its name.
func name(t *testing.T, e events.Encoded) string {
	t.Helper()
	s, err := events.DecodeObject[*ambientv1.Session](e.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return s.GetName()
}

// TestStoreDisagreeing: the KV audit's comparison names the published
// objects KV lacks and the KV entries of objects not published (deleted, or
// never known), and leaves out ids with a change pending.
func TestStoreDisagreeing(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.Sync([]*ambientv1.Session{sess("live", "l", 1, 0), sess("lost", "x", 1, 0), sess("gone", "g", 1, 0), sess("pending", "p", 1, 0)}, nil)
	for _, id := range []string{"live", "lost", "gone"} {
		c, _ := s.Next(id)
		s.Published(c)
	}
	s.Apply(del("gone"))
	c, _ := s.Next("gone")
	s.Published(c)
	// KV: live (right), gone (back after its delete), unknown (never
	// published here); lost's entry is missing; pending is unpublished.
	got := s.Disagreeing(map[string]bool{"live": true, "gone": true, "unknown": true})
	slices.Sort(got)
	if want := []string{"gone", "lost", "unknown"}; !slices.Equal(got, want) {
		t.Fatalf("Disagreeing = %v, want %v", got, want)
	}
}

// TestListingKeepsLiveEvents: watch events applied while a listing runs
// (between its pages) are newer than the pages read before them, so Finish
// keeps what they did: an update is not rolled back to the listed state, an
// object created after its page was read is not cleared, and one deleted
// after its page was read does not come back. A listed state newer than
// the live one still wins (its own event is on the way).
func TestListingKeepsLiveEvents(t *testing.T) {
	t.Parallel()
	for _, cached := range []bool{true, false} { // a relist, and the first list
		t.Run(fmt.Sprintf("cached=%v", cached), func(t *testing.T) {
			t.Parallel()
			s := NewStore[*ambientv1.Session]()
			if cached {
				s.Sync([]*ambientv1.Session{sess("upd", "v1", 1, 0), sess("del", "v1", 1, 0), sess("old", "v1", 1, 0), sess("same", "v1", 1, 0)}, nil)
			}
			l := s.StartList()
			l.Add([]*ambientv1.Session{sess("upd", "v1", 1, 0), sess("del", "v1", 1, 0), sess("old", "v3", 3, 0), sess("same", "v1", 1, 0)})
			for _, ob := range []Observed[*ambientv1.Session]{
				upd(sess("upd", "v2", 2, 0)), // after its page was read
				del("del"),
				upd(sess("new", "v1", 5, 0)), // created after its page was read
				upd(sess("old", "v2", 2, 0)), // the list already read v3
			} {
				s.Apply(ob)
			}
			l.Finish(nil)
			want := map[string]string{"upd": "v2", "new": "v1", "old": "v3", "same": "v1"}
			for _, id := range []string{"upd", "del", "new", "old", "same"} {
				o, ok := s.Get(id)
				switch w, wantOK := want[id]; {
				case ok != wantOK:
					t.Errorf("%s present=%v, want %v", id, ok, wantOK)
				case ok && o.GetName() != w:
					t.Errorf("%s = %s, want %s", id, o.GetName(), w)
				}
			}
			// Another listing without live events is the truth again.
			s.Sync([]*ambientv1.Session{sess("upd", "v2", 2, 0)}, nil)
			if s.Len() != 1 {
				t.Fatalf("after a quiet relist the store holds %d objects, want 1", s.Len())
			}
		})
	}
}

// TestExpectBelievesTotalOnlyUpToAMillion: the total of a list page is an
// int32 from the wire; a server bug's absurd total used to size the
// listing's buffers for that many objects before a second page arrived
// (2^31: 256 GiB). Buffers are sized for the total up to maxExpected
// objects (a real initial sync is sized once: no doubling garbage at its
// peak), and grow beyond.
func TestExpectBelievesTotalOnlyUpToAMillion(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	l := s.StartList()
	l.Expect(3*maxExpected, 3)
	if c := cap(l.items); c != maxExpected {
		t.Errorf("listing buffers sized for %d objects for a claimed total of %d, want %d", c, 3*maxExpected, maxExpected)
	}
	l.Finish(nil)

	l = s.StartList()
	l.Expect(100_000, 500)
	if c := cap(l.items); c != 100_000 {
		t.Errorf("listing buffers sized for %d objects for a total of 100,000, want 100,000", c)
	}
	l.Finish(nil)
}
