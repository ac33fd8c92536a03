package events

import (
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
)

// APIObject is the set of API messages carried in events. Code shared by the
// three resources is generic over it instead of switching on any.
type APIObject interface {
	*ambientv1.Session | *ambientv1.Project | *ambientv1.ProjectSettings
	proto.Message
	GetMetadata() *ambientv1.ObjectReference
}

// ResourceOf returns the resource enum of T.
func ResourceOf[T APIObject]() eventsv1.Resource {
	var zero T
	switch any(zero).(type) {
	case *ambientv1.Session:
		return eventsv1.Resource_RESOURCE_SESSIONS
	case *ambientv1.Project:
		return eventsv1.Resource_RESOURCE_PROJECTS
	default:
		return eventsv1.Resource_RESOURCE_PROJECT_SETTINGS
	}
}

// Wrap puts obj into the Object oneof. A nil obj gives nil.
func Wrap[T APIObject](obj T) *eventsv1.Object {
	switch o := any(obj).(type) {
	case *ambientv1.Session:
		if o == nil {
			return nil
		}
		return &eventsv1.Object{Kind: &eventsv1.Object_Session{Session: o}}
	case *ambientv1.Project:
		if o == nil {
			return nil
		}
		return &eventsv1.Object{Kind: &eventsv1.Object_Project{Project: o}}
	case *ambientv1.ProjectSettings:
		if o == nil {
			return nil
		}
		return &eventsv1.Object{Kind: &eventsv1.Object_ProjectSettings{ProjectSettings: o}}
	}
	return nil
}

// Unwrap returns the T inside o, or false when o holds another kind.
func Unwrap[T APIObject](o *eventsv1.Object) (T, bool) {
	var zero T
	if o == nil {
		return zero, false
	}
	var got proto.Message
	switch k := o.GetKind().(type) {
	case *eventsv1.Object_Session:
		got = k.Session
	case *eventsv1.Object_Project:
		got = k.Project
	case *eventsv1.Object_ProjectSettings:
		got = k.ProjectSettings
	}
	t, ok := got.(T)
	if !ok || t == nil {
		return zero, false
	}
	return t, true
}

// Message returns the API message held by o, or nil.
func Message(o *eventsv1.Object) proto.Message {
	switch k := o.GetKind().(type) {
	case *eventsv1.Object_Session:
		return k.Session
	case *eventsv1.Object_Project:
		return k.Project
	case *eventsv1.Object_ProjectSettings:
		return k.ProjectSettings
	}
	return nil
}

// ResourceOfObject returns the resource of the kind held by o.
func ResourceOfObject(o *eventsv1.Object) eventsv1.Resource {
	switch o.GetKind().(type) {
	case *eventsv1.Object_Session:
		return eventsv1.Resource_RESOURCE_SESSIONS
	case *eventsv1.Object_Project:
		return eventsv1.Resource_RESOURCE_PROJECTS
	case *eventsv1.Object_ProjectSettings:
		return eventsv1.Resource_RESOURCE_PROJECT_SETTINGS
	}
	return eventsv1.Resource_RESOURCE_UNSPECIFIED
}

func metadataOf(o *eventsv1.Object) *ambientv1.ObjectReference {
	switch k := o.GetKind().(type) {
	case *eventsv1.Object_Session:
		return k.Session.GetMetadata()
	case *eventsv1.Object_Project:
		return k.Project.GetMetadata()
	case *eventsv1.Object_ProjectSettings:
		return k.ProjectSettings.GetMetadata()
	}
	return nil
}

// ObjectID returns metadata.id of the object in o.
func ObjectID(o *eventsv1.Object) string { return metadataOf(o).GetId() }

// UpdatedAt returns metadata.updated_at of the object in o (zero when unset).
func UpdatedAt(o *eventsv1.Object) time.Time {
	ts := metadataOf(o).GetUpdatedAt()
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// ProjectID returns the project an object belongs to: a session's or
// settings' project_id, and a project's own id.
func ProjectID(o *eventsv1.Object) string {
	switch k := o.GetKind().(type) {
	case *eventsv1.Object_Session:
		return k.Session.GetProjectId()
	case *eventsv1.Object_Project:
		return k.Project.GetMetadata().GetId()
	case *eventsv1.Object_ProjectSettings:
		return k.ProjectSettings.GetProjectId()
	}
	return ""
}
