package apiclient

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// MaxStalledPages is how many pages in a row may bring nothing new (no
// object not seen before in the same list, no changed copy of one) before
// the list gives up (pageStalls). It is also the slack of the page cap.
const MaxStalledPages = 3

// pageStalls is the rule every paged list of the API follows against a
// server that ignores the page parameter: such a server answers every page
// with the same items, their total is never reached, and the list would ask
// for ever. Two checks end it:
//
//   - MaxStalledPages pages in a row that brought nothing new. A page of
//     objects seen before is normal on a busy server: an updated row moves
//     to the end of the server's order, so with about a page of updates per
//     page read the last pages hold only objects seen earlier in the list,
//     but in a newer state. Such a copy is progress; an identical one is
//     not.
//   - More items received than twice the total plus MaxStalledPages pages:
//     pages are offsets into the table, so a list that follows them reads
//     each offset once, about total items however much the table churns.
//     Only a server that ignores the page parameter while its objects keep
//     changing gets past the first check; this one ends it.
//
// The zero value is ready.
type pageStalls struct {
	run      int // pages in a row without anything new
	received int // items received in this list
	largest  int // the largest page received
}

// after records page, a page of n items that left the list incomplete
// (listed of total objects so far) and brought fresh items (new objects,
// or changed copies of ones seen before in the list). It returns an error
// wrapping ErrListNoProgress once either check of pageStalls fails.
func (s *pageStalls) after(page int32, n, fresh, listed, total int) error {
	s.received += n
	s.largest = max(s.largest, n)
	if limit := 2*total + MaxStalledPages*s.largest; s.received > limit {
		return fmt.Errorf("list page %d: %w: %d items received for a total of %d, %d objects collected (does the server ignore the page parameter?)",
			page, ErrListNoProgress, s.received, total, listed)
	}
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

// Shrunk reports that a page larger than the client's receive limit
// (MaxRecvMsgSize) made EachPage ask for it again in pages of to items
// instead of from; err is the refused call's error.
type Shrunk func(page, from, to int32, err error)

// EachPage fetches pages 1, 2, ... with pageSize until a page is empty or
// the objects seen reach the metadata.total the server reports, and calls
// page with each page's fresh items in server order and that total. It
// never holds more than one page: the caller decides what to keep.
//
//   - Objects are counted by id, not by item: a server that ignores the page
//     parameter answers every page with the same items, and counting items
//     would end the list "complete" after a few copies of page 1.
//   - An item whose id was handed over earlier in this list with the same
//     updated_at is not handed over again. An object updated between two
//     pages moves to the end of the server's order and comes again in a
//     newer state: that copy is handed over, and counts as progress.
//   - Against a server that ignores the page parameter it gives up as
//     pageStalls says, with an error wrapping ErrListNoProgress.
//   - A page the client refuses as larger than its receive limit
//     (ResourceExhausted) is asked for again with half the page size, down
//     to 1, from the same offset; shrunk (nil: not reported) hears of each
//     halving. The rest of the list keeps the smaller size.
//
// The server may clamp the page size (sizes over 500 become 20); the loop
// only relies on the items returned. The items handed to page belong to it.
// Errors wrap the failing call's gRPC status, or page's error as it is.
func EachPage[T Object, P Page[T]](ctx context.Context, pageSize int32, fetch func(ctx context.Context, page, size int32) (P, error), page func(items []T, total int) error, shrunk Shrunk) error {
	// id -> updated_at (ns) of the copy handed over. Sized by what
	// arrives, never by the total the server claims: a wrong total must
	// not allocate before a single object is seen.
	seen := map[string]int64{}
	var stalls pageStalls
	size := max(pageSize, 1)
	for n := int32(1); ; n++ {
		resp, err := fetch(ctx, n, size)
		for status.Code(err) == codes.ResourceExhausted && size > 1 {
			// Page n starts at offset (n-1)*size; ask from there in
			// smaller pages (from a little before when size is odd: the
			// repeats are skipped below).
			smaller := size / 2
			if shrunk != nil {
				shrunk(n, size, smaller, err)
			}
			n = int32(int64(n-1)*int64(size)/int64(smaller)) + 1
			size = smaller
			resp, err = fetch(ctx, n, size)
		}
		if err != nil {
			return fmt.Errorf("list page %d: %w", n, err)
		}
		items := resp.GetItems()
		if len(items) == 0 {
			return nil
		}
		total := int(resp.GetMetadata().GetTotal())
		received, fresh := len(items), 0
		for _, it := range items {
			md := it.GetMetadata()
			id, at := md.GetId(), md.GetUpdatedAt().GetSeconds()*1e9+int64(md.GetUpdatedAt().GetNanos())
			if prev, dup := seen[id]; dup && prev == at {
				continue
			}
			seen[id] = at
			items[fresh] = it // in place: the page is ours until handed over
			fresh++
		}
		if fresh > 0 {
			if err := page(items[:fresh], total); err != nil {
				return err
			}
		}
		if len(seen) >= total {
			return nil
		}
		if err := stalls.after(n, received, fresh, len(seen), total); err != nil {
			return err
		}
	}
}

// ListAll collects what EachPage hands over and returns the items in server
// order, until it has metadata.total objects or a page is empty. When a
// change between pages shows an object again, the later copy wins and keeps
// the object's first position.
func ListAll[T Object, P Page[T]](ctx context.Context, pageSize int32, fetch func(ctx context.Context, page, size int32) (P, error)) ([]T, error) {
	return listAll(ctx, pageSize, fetch, nil)
}

func listAll[T Object, P Page[T]](ctx context.Context, pageSize int32, fetch func(ctx context.Context, page, size int32) (P, error), shrunk Shrunk) ([]T, error) {
	var out []T
	index := map[string]int{} // id -> index in out
	err := EachPage(ctx, pageSize, fetch, func(items []T, _ int) error {
		for _, it := range items {
			id := it.GetMetadata().GetId()
			if i, ok := index[id]; ok {
				out[i] = it
				continue
			}
			index[id] = len(out)
			out = append(out, it)
		}
		return nil
	}, shrunk)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListSessions lists every session (see ListAll).
func (c *Client) ListSessions(ctx context.Context) ([]*ambientv1.Session, error) {
	items, err := listAll(ctx, c.pageSize, func(ctx context.Context, page, size int32) (*ambientv1.ListSessionsResponse, error) {
		return c.sessions.ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: page, Size: size})
	}, c.LogShrunk("sessions"))
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return items, nil
}

// ListProjects lists every project (see ListAll).
func (c *Client) ListProjects(ctx context.Context) ([]*ambientv1.Project, error) {
	items, err := listAll(ctx, c.pageSize, func(ctx context.Context, page, size int32) (*ambientv1.ListProjectsResponse, error) {
		return c.projects.ListProjects(ctx, &ambientv1.ListProjectsRequest{Page: page, Size: size})
	}, c.LogShrunk("projects"))
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return items, nil
}

// ListProjectSettings lists every project settings object (see ListAll).
func (c *Client) ListProjectSettings(ctx context.Context) ([]*ambientv1.ProjectSettings, error) {
	items, err := listAll(ctx, c.pageSize, func(ctx context.Context, page, size int32) (*ambientv1.ListProjectSettingsResponse, error) {
		return c.settings.ListProjectSettings(ctx, &ambientv1.ListProjectSettingsRequest{Page: page, Size: size})
	}, c.LogShrunk("project settings"))
	if err != nil {
		return nil, fmt.Errorf("list project settings: %w", err)
	}
	return items, nil
}
