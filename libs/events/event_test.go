package events

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestNewEvent pins every field of a built event: the informer publishes
// exactly this (through NewEventVersion), and consumers and the DLQ rely on
// the EventId carrying the object's version.
func TestNewEvent(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	old := testSession("s1", "p1", "before", at.Add(-time.Second))
	cur := testSession("s1", "p1", "after", at)
	tests := []struct {
		name    string
		typ     eventsv1.EventType
		old     *ambientv1.Session
		version string // "" means VersionOf(cur) through NewEvent
		want    *eventsv1.ResourceEvent
	}{
		{name: "added", typ: eventsv1.EventType_EVENT_TYPE_ADDED, want: &eventsv1.ResourceEvent{
			Type: eventsv1.EventType_EVENT_TYPE_ADDED, Resource: eventsv1.Resource_RESOURCE_SESSIONS, ObjectId: "s1", ProjectId: "p1",
			Object: Wrap(cur), ObservedTime: timestamppb.New(at), Version: VersionOf(cur),
			EventId: "sessions/s1/" + VersionOf(cur) + "/ADDED",
		}},
		{name: "modified keeps the old object", typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, old: old, want: &eventsv1.ResourceEvent{
			Type: eventsv1.EventType_EVENT_TYPE_MODIFIED, Resource: eventsv1.Resource_RESOURCE_SESSIONS, ObjectId: "s1", ProjectId: "p1",
			Object: Wrap(cur), OldObject: Wrap(old), ObservedTime: timestamppb.New(at), Version: VersionOf(cur),
			EventId: "sessions/s1/" + VersionOf(cur) + "/MODIFIED",
		}},
		{name: "given version is used as is", typ: eventsv1.EventType_EVENT_TYPE_DELETED, version: "v-cached", want: &eventsv1.ResourceEvent{
			Type: eventsv1.EventType_EVENT_TYPE_DELETED, Resource: eventsv1.Resource_RESOURCE_SESSIONS, ObjectId: "s1", ProjectId: "p1",
			Object: Wrap(cur), ObservedTime: timestamppb.New(at), Version: "v-cached",
			EventId: "sessions/s1/v-cached/DELETED",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got *eventsv1.ResourceEvent
			if tc.version == "" {
				got = NewEvent(tc.typ, cur, tc.old, at)
			} else {
				got = NewEventVersion(tc.typ, cur, tc.old, tc.version, at)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("event differs (-want +got):\n%s", diff)
			}
		})
	}
}
