package publish

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// TestNewEventMatchesLibrary: the informer's event builder (which reuses the
// cached version) builds exactly what events.NewEvent builds.
func TestNewEventMatchesLibrary(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	s := func(prompt string, us int64) *ambientv1.Session {
		return &ambientv1.Session{
			Metadata:  &ambientv1.ObjectReference{Id: "s1", UpdatedAt: timestamppb.New(time.UnixMicro(us))},
			ProjectId: proto.String("p1"), Prompt: proto.String(prompt),
		}
	}
	tests := []struct {
		name string
		c    diff.Change[*ambientv1.Session]
		old  *ambientv1.Session // what NewEvent gets as old
	}{
		{name: "added", c: diff.Change[*ambientv1.Session]{Type: eventsv1.EventType_EVENT_TYPE_ADDED, ID: "s1", Object: s("a", 1)}},
		{name: "modified", c: diff.Change[*ambientv1.Session]{Type: eventsv1.EventType_EVENT_TYPE_MODIFIED, ID: "s1", Object: s("b", 2), Old: s("a", 1)}, old: s("a", 1)},
		{name: "deleted", c: diff.Change[*ambientv1.Session]{Type: eventsv1.EventType_EVENT_TYPE_DELETED, ID: "s1", Object: s("b", 2)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.c.Version = events.VersionOf(tc.c.Object)
			got := newEvent(tc.c, at)
			want := events.NewEvent(tc.c.Type, tc.c.Object, tc.old, at)
			if !proto.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}
