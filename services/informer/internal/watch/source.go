package watch

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// Source is the API side of one resource: a paginated list, handed over
// page by page, and a watch stream that lives until its ctx ends.
type Source[T events.APIObject] struct {
	// Pages lists every object and calls page with each page's items in
	// server order and the total the server reports (0: unknown); an error
	// from page ends the list with it. The items belong to page (the caller
	// keeps no reference).
	Pages func(ctx context.Context, page func(items []T, total int) error) error
	// Get reads one object by id; found is false when the server does not
	// have it (NotFound). It confirms the objects a list did not show
	// (Watcher.confirmUnlisted). Nil: Pages is a consistent snapshot, whose
	// absent objects are gone.
	Get   func(ctx context.Context, id string) (obj T, found bool, err error)
	Watch func(ctx context.Context) (Stream[T], error)
	// Probe asks the API cheaply whether it answers (nil error), to cut a
	// reconnect backoff short once the API is back (Watcher.wait). Nil: no
	// probing, the backoff runs out. The API sources below use the
	// standard gRPC health check (apiclient.Client.Check): the real
	// ambient-api-server serves it on its gRPC port without a token and
	// reads no database for it, and memapi refuses it during an outage
	// like every other call.
	Probe func(ctx context.Context) error
}

// getter adapts a generated Get call to Source.Get: NotFound is "not
// found", not an error.
func getter[T events.APIObject](get func(ctx context.Context, id string) (T, error)) func(ctx context.Context, id string) (T, bool, error) {
	return func(ctx context.Context, id string) (T, bool, error) {
		o, err := get(ctx, id)
		switch {
		case status.Code(err) == codes.NotFound:
			var zero T
			return zero, false, nil
		case err != nil:
			var zero T
			return zero, false, err // apiclient's error names the call and the id
		}
		return o, true, nil
	}
}

// Whole adapts a list that returns everything at once to Source.Pages.
func Whole[T events.APIObject](list func(ctx context.Context) ([]T, error)) func(ctx context.Context, page func([]T, int) error) error {
	return func(ctx context.Context, page func([]T, int) error) error {
		items, err := list(ctx)
		if err != nil {
			return err
		}
		return page(items, len(items))
	}
}

// pageSize is the largest page the server accepts (larger ones become 20).
const pageSize = apiclient.DefaultPageSize

// listPages hands each page over as apiclient.EachPage does (fresh items
// only; ErrListNoProgress against a server that ignores the page
// parameter; smaller pages when one is over the receive limit), instead of
// collecting them: the informer never holds a whole list of decoded
// objects. An object updated between two pages moves to the end of the
// server's order and comes again, newer: that copy is handed over, and the
// store keeps the newer.
func listPages[T events.APIObject, P apiclient.Page[T]](ctx context.Context, fetch func(ctx context.Context, page, size int32) (P, error), page func([]T, int) error, shrunk apiclient.Shrunk) error {
	return apiclient.EachPage(ctx, pageSize, fetch, page, shrunk)
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
		Pages: func(ctx context.Context, page func([]*ambientv1.Session, int) error) error {
			return listPages(ctx, func(ctx context.Context, n, size int32) (*ambientv1.ListSessionsResponse, error) {
				return c.Sessions().ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: n, Size: size})
			}, page, c.LogShrunk("sessions"))
		},
		Get:   getter(c.GetSession),
		Probe: c.Check,
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
		Pages: func(ctx context.Context, page func([]*ambientv1.Project, int) error) error {
			return listPages(ctx, func(ctx context.Context, n, size int32) (*ambientv1.ListProjectsResponse, error) {
				return c.Projects().ListProjects(ctx, &ambientv1.ListProjectsRequest{Page: n, Size: size})
			}, page, c.LogShrunk("projects"))
		},
		Get:   getter(c.GetProject),
		Probe: c.Check,
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
		Pages: func(ctx context.Context, page func([]*ambientv1.ProjectSettings, int) error) error {
			return listPages(ctx, func(ctx context.Context, n, size int32) (*ambientv1.ListProjectSettingsResponse, error) {
				return c.ProjectSettings().ListProjectSettings(ctx, &ambientv1.ListProjectSettingsRequest{Page: n, Size: size})
			}, page, c.LogShrunk("project settings"))
		},
		Get:   getter(c.GetProjectSettings),
		Probe: c.Check,
		Watch: func(ctx context.Context) (Stream[*ambientv1.ProjectSettings], error) {
			st, err := c.WatchProjectSettings(ctx)
			if err != nil {
				return nil, err
			}
			return adapt(st.Recv, (*ambientv1.ProjectSettingsWatchEvent).GetProjectSettings), nil
		},
	}
}
