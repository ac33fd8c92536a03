package apiclient

import (
	"context"
	"fmt"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Object is what every listed ambient object offers.
type Object interface {
	comparable
	GetMetadata() *ambientv1.ObjectReference
}

// Page is one List response.
type Page[T any] interface {
	GetItems() []T
	GetMetadata() *ambientv1.ListMeta
}

// MaxStalledPages is how many pages in a row may bring no object not seen
// before in the same list before the list gives up (PageStalls).
const MaxStalledPages = 3

// PageStalls is the rule every paged list of the API follows against a
// server that ignores the page parameter: such a server answers every
// page with the same items, their total is never reached, and the list
// would ask for ever. A page of objects seen before is possible on a busy
// server (objects updated between two calls move to the end of the
// order), but not MaxStalledPages pages in a row. The zero value is ready.
type PageStalls struct {
	run int // pages in a row without a new object
}

// After records page, a page that left the list incomplete (listed of
// total objects so far) and brought fresh objects not seen before in it.
// It returns an error wrapping ErrListNoProgress once MaxStalledPages
// pages in a row brought none.
func (s *PageStalls) After(page int32, fresh, listed, total int) error {
	if fresh > 0 {
		s.run = 0
		return nil
	}
	if s.run++; s.run < MaxStalledPages {
		return nil
	}
	return fmt.Errorf("list page %d: %w: %d pages in a row brought no new object, %d of %d collected (does the server ignore the page parameter?)",
		page, ErrListNoProgress, s.run, listed, total)
}

// ListAll fetches pages 1, 2, ... with pageSize until it has collected
// metadata.total items or a page is empty, and returns the items in server
// order. The server may clamp the page size (sizes over 500 become 20); the
// loop only relies on the items returned, so it still collects everything.
// When a change between pages shows an object twice, the later copy wins and
// keeps its first position. Errors wrap the failing call's gRPC status.
//
// Against a server that ignores the page parameter it gives up as
// PageStalls says, with an error wrapping ErrListNoProgress.
func ListAll[T Object, P Page[T]](ctx context.Context, pageSize int32, fetch func(ctx context.Context, page, size int32) (P, error)) ([]T, error) {
	var out []T
	var seen map[string]int // id -> index in out
	var stalls PageStalls
	for page := int32(1); ; page++ {
		resp, err := fetch(ctx, page, pageSize)
		if err != nil {
			return nil, fmt.Errorf("list page %d: %w", page, err)
		}
		items := resp.GetItems()
		if len(items) == 0 {
			return out, nil
		}
		total := int(resp.GetMetadata().GetTotal())
		if out == nil {
			out = make([]T, 0, max(total, len(items)))
			seen = make(map[string]int, max(total, len(items)))
		}
		before := len(out)
		for _, it := range items {
			id := it.GetMetadata().GetId()
			if i, ok := seen[id]; ok {
				out[i] = it
				continue
			}
			seen[id] = len(out)
			out = append(out, it)
		}
		if len(out) >= total {
			return out, nil
		}
		if err := stalls.After(page, len(out)-before, len(out), total); err != nil {
			return nil, err
		}
	}
}

// ListSessions lists every session (see ListAll).
func (c *Client) ListSessions(ctx context.Context) ([]*ambientv1.Session, error) {
	items, err := ListAll(ctx, c.pageSize, func(ctx context.Context, page, size int32) (*ambientv1.ListSessionsResponse, error) {
		return c.sessions.ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: page, Size: size})
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return items, nil
}

// ListProjects lists every project (see ListAll).
func (c *Client) ListProjects(ctx context.Context) ([]*ambientv1.Project, error) {
	items, err := ListAll(ctx, c.pageSize, func(ctx context.Context, page, size int32) (*ambientv1.ListProjectsResponse, error) {
		return c.projects.ListProjects(ctx, &ambientv1.ListProjectsRequest{Page: page, Size: size})
	})
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return items, nil
}

// ListProjectSettings lists every project settings object (see ListAll).
func (c *Client) ListProjectSettings(ctx context.Context) ([]*ambientv1.ProjectSettings, error) {
	items, err := ListAll(ctx, c.pageSize, func(ctx context.Context, page, size int32) (*ambientv1.ListProjectSettingsResponse, error) {
		return c.settings.ListProjectSettings(ctx, &ambientv1.ListProjectSettingsRequest{Page: page, Size: size})
	})
	if err != nil {
		return nil, fmt.Errorf("list project settings: %w", err)
	}
	return items, nil
}
