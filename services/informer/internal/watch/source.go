package watch

import (
	"context"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/events"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Event is one watch event in typed form. ID is the object id (from the
// object when present, else resource_id: DELETED carries only the id).
type Event[T events.APIObject] struct {
	Type   ambientv1.EventType
	ID     string
	Object T
}

// Stream is an open watch stream. Recv blocks until the next event and
// returns io.EOF when the server ends the stream cleanly.
type Stream[T events.APIObject] interface {
	Recv() (Event[T], error)
}

// Source is the API side of one resource: a full paginated list and a
// watch stream that lives until its ctx ends.
type Source[T events.APIObject] struct {
	List  func(ctx context.Context) ([]T, error)
	Watch func(ctx context.Context) (Stream[T], error)
}

// recvFunc adapts a generated watch stream to Stream.
type recvFunc[T events.APIObject] func() (Event[T], error)

func (f recvFunc[T]) Recv() (Event[T], error) { return f() }

// watchEvent is what the three generated watch event messages share.
type watchEvent interface {
	GetType() ambientv1.EventType
	GetResourceId() string
}

// adapt turns a generated stream into a Stream, taking the object out with
// obj. This and the three constructors below are the only per-resource code.
func adapt[T events.APIObject, E watchEvent](recv func() (E, error), obj func(E) T) Stream[T] {
	return recvFunc[T](func() (Event[T], error) {
		e, err := recv()
		if err != nil {
			return Event[T]{}, err
		}
		o := obj(e)
		id := o.GetMetadata().GetId()
		if id == "" {
			id = e.GetResourceId()
		}
		return Event[T]{Type: e.GetType(), ID: id, Object: o}, nil
	})
}

// Sessions is the Source of sessions.
func Sessions(c *apiclient.Client) Source[*ambientv1.Session] {
	return Source[*ambientv1.Session]{
		List: c.ListSessions,
		Watch: func(ctx context.Context) (Stream[*ambientv1.Session], error) {
			st, err := c.WatchSessions(ctx)
			if err != nil {
				return nil, err
			}
			return adapt(st.Recv, (*ambientv1.SessionWatchEvent).GetSession), nil
		},
	}
}

// Projects is the Source of projects.
func Projects(c *apiclient.Client) Source[*ambientv1.Project] {
	return Source[*ambientv1.Project]{
		List: c.ListProjects,
		Watch: func(ctx context.Context) (Stream[*ambientv1.Project], error) {
			st, err := c.WatchProjects(ctx)
			if err != nil {
				return nil, err
			}
			return adapt(st.Recv, (*ambientv1.ProjectWatchEvent).GetProject), nil
		},
	}
}

// ProjectSettings is the Source of project settings.
func ProjectSettings(c *apiclient.Client) Source[*ambientv1.ProjectSettings] {
	return Source[*ambientv1.ProjectSettings]{
		List: c.ListProjectSettings,
		Watch: func(ctx context.Context) (Stream[*ambientv1.ProjectSettings], error) {
			st, err := c.WatchProjectSettings(ctx)
			if err != nil {
				return nil, err
			}
			return adapt(st.Recv, (*ambientv1.ProjectSettingsWatchEvent).GetProjectSettings), nil
		},
	}
}
