package events

import (
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// NewEvent builds the ResourceEvent for a change of obj. old is the previous
// state (nil when unknown). For DELETED, obj is the last known state. The
// version is obj's, so EventId (MsgID) is stable for the same change and
// JetStream drops a republished duplicate.
func NewEvent[T APIObject](typ eventsv1.EventType, obj, old T, observed time.Time) *eventsv1.ResourceEvent {
	return NewEventVersion(typ, obj, old, VersionOf(obj), observed)
}

// NewEventVersion is NewEvent with obj's version already known: the
// informer's cache computes it once per object, and hashing the object again
// per event would be the costliest part of a publish. version must be
// VersionOf(obj), or EventId no longer identifies the change.
func NewEventVersion[T APIObject](typ eventsv1.EventType, obj, old T, version string, observed time.Time) *eventsv1.ResourceEvent {
	o := Wrap(obj)
	ev := &eventsv1.ResourceEvent{
		Type:         typ,
		Resource:     ResourceOf[T](),
		ObjectId:     obj.GetMetadata().GetId(),
		ProjectId:    ProjectID(o),
		Object:       o,
		OldObject:    Wrap(old),
		ObservedTime: timestamppb.New(observed),
		Version:      version,
	}
	ev.EventId = MsgID(ev)
	return ev
}
