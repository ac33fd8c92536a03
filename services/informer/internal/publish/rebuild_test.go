package publish

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestRebuildFromLastEvents: Rebuild gives each object the state its last
// event in the stream gave consumers, from one message per object: a
// MODIFIED's new state, a DELETED (not in the published state), for a
// reference event (over the payload limit) the version it names and the
// last state that fitted before it (what the objects bucket kept), and
// for a replayed dead letter the state before it at the replay's
// sequence.
func TestRebuildFromLastEvents(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	p.cfg.Reconfirm = func(context.Context) error { return nil }
	ctx := t.Context()
	pub := func(typ eventsv1.EventType, s *ambientv1.Session, seq uint64) Outcome {
		t.Helper()
		c := change(t, typ, s)
		c.Seq = seq
		out, err := Publish(ctx, p, revsOf(p), c)
		if err != nil {
			t.Fatalf("%s %s: %v", events.TypeName(typ), s.GetMetadata().GetId(), err)
		}
		return out
	}
	// changed: added, then modified.
	v1 := pub(eventsv1.EventType_EVENT_TYPE_ADDED, versioned("changed", "v1", 100), 0)
	changed := versioned("changed", "v2", 200)
	pub(eventsv1.EventType_EVENT_TYPE_MODIFIED, changed, v1.Seq)
	// gone: added, then deleted.
	gone := versioned("gone", "v1", 100)
	pub(eventsv1.EventType_EVENT_TYPE_DELETED, gone, pub(eventsv1.EventType_EVENT_TYPE_ADDED, gone, 0).Seq)
	// grown: added small, then over the limit (a reference event).
	small := versioned("grown", "small", 100)
	grownAdded := pub(eventsv1.EventType_EVENT_TYPE_ADDED, small, 0)
	big := versioned("grown", strings.Repeat("p", 2*p.limit()), 200)
	ref := pub(eventsv1.EventType_EVENT_TYPE_MODIFIED, big, grownAdded.Seq)
	if !ref.Omitted.Object {
		t.Fatalf("omitted %+v, want a reference event", ref.Omitted)
	}
	// replayed: added, its ADDED dead-lettered and replayed.
	replayedState := versioned("replayed", "v1", 100)
	replayAck := replayDeadLetter(t, js, pub(eventsv1.EventType_EVENT_TYPE_ADDED, replayedState, 0).Seq)

	got, err := Rebuild[*ambientv1.Session](ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("rebuilt %d objects, want 4: %v", len(got), got)
	}
	if st := got["changed"]; st.Ref || st.Deleted || st.Object == nil || events.VersionOf(st.Object) != events.VersionOf(changed) {
		t.Errorf("changed = %+v, want its MODIFIED's state %s", st, events.VersionOf(changed))
	}
	if st := got["gone"]; !st.Deleted || st.Object != nil {
		t.Errorf("gone = %+v, want deleted", st)
	}
	if st := got["grown"]; !st.Ref || st.Version != events.VersionOf(big) || st.Seq != ref.Seq || st.Fitted == nil || events.VersionOf(st.Fitted) != events.VersionOf(small) {
		t.Errorf("grown = %+v, want a reference of %s at %d, fitted %s", st, events.VersionOf(big), ref.Seq, events.VersionOf(small))
	}
	if st := got["replayed"]; st.Ref || st.Object == nil || events.VersionOf(st.Object) != events.VersionOf(replayedState) || st.Seq != replayAck.Sequence {
		t.Errorf("replayed = %+v, want %s at the replay's sequence %d", st, events.VersionOf(replayedState), replayAck.Sequence)
	}
}
