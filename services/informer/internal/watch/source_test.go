package watch

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestListPagesServerIgnoresPage: a server that ignores the page parameter
// answers every page with page 1. The list must hand each object over once
// and fail with ErrListNoProgress; it used to count the repeated items
// towards the total and end "complete" after handing page 1 over three
// times, without ever listing the objects past it.
func TestListPagesServerIgnoresPage(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	for i := range 5 {
		if _, err := c.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("s-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	fetch := func(ctx context.Context, _, _ int32) (*ambientv1.ListSessionsResponse, error) {
		calls++
		return c.Sessions().ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: 1, Size: 2})
	}
	handed := map[string]int{}
	err := listPages(t.Context(), fetch, func(items []*ambientv1.Session, _ int) error {
		for _, o := range items {
			handed[o.GetMetadata().GetId()]++
		}
		return nil
	})
	for id, n := range handed {
		if n > 1 {
			t.Errorf("session %s handed over %d times", id, n)
		}
	}
	if !errors.Is(err, apiclient.ErrListNoProgress) {
		t.Fatalf("list of a server that ignores the page parameter returned %v, want ErrListNoProgress", err)
	}
	if want := 1 + apiclient.MaxStalledPages; calls != want {
		t.Errorf("%d pages fetched, want %d", calls, want)
	}
}

// TestListPagesHandsOverNewerCopy: an object updated between two pages
// moves to the end of the server's order and comes again, newer: that copy
// is handed over (the store keeps the newer), an unchanged copy is not, and
// a page of only repeats does not end the list.
func TestListPagesHandsOverNewerCopy(t *testing.T) {
	t.Parallel()
	pages := [][]*ambientv1.Session{
		{sess("a", 1), sess("b", 1)},
		{sess("b", 1), sess("a", 2)}, // a updated: moved to the end
		{sess("c", 1)},
	}
	fetch := func(_ context.Context, n, _ int32) (*ambientv1.ListSessionsResponse, error) {
		if int(n) > len(pages) {
			return &ambientv1.ListSessionsResponse{Metadata: &ambientv1.ListMeta{Total: 3}}, nil
		}
		return &ambientv1.ListSessionsResponse{Items: append([]*ambientv1.Session(nil), pages[n-1]...), Metadata: &ambientv1.ListMeta{Total: 3}}, nil
	}
	var got []string
	err := listPages(t.Context(), fetch, func(items []*ambientv1.Session, _ int) error {
		for _, o := range items {
			got = append(got, fmt.Sprint(o.GetMetadata().GetId(), "@", o.GetMetadata().GetUpdatedAt().AsTime().UnixMicro()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint([]string{"a@1", "b@1", "a@2", "c@1"}); fmt.Sprint(got) != want {
		t.Fatalf("handed over %v, want %v", got, want)
	}
}
