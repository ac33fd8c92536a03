package apiclient_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ambient-code/control-plane/libs/apiclient"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// pageBlindProjects is a ProjectService that ignores the page parameter:
// every List answers the first page of its total, as a server or proxy that
// drops the query does.
type pageBlindProjects struct {
	ambientv1.UnimplementedProjectServiceServer
	total int32
	calls atomic.Int32
}

func (s *pageBlindProjects) ListProjects(_ context.Context, req *ambientv1.ListProjectsRequest) (*ambientv1.ListProjectsResponse, error) {
	s.calls.Add(1)
	resp := &ambientv1.ListProjectsResponse{Metadata: &ambientv1.ListMeta{Page: 1, Size: req.GetSize(), Total: s.total}}
	for i := range min(req.GetSize(), s.total) {
		id := string('a' + i)
		resp.Items = append(resp.Items, &ambientv1.Project{Metadata: &ambientv1.ObjectReference{Id: id}, Name: id})
	}
	return resp, nil
}

// TestListAllStopsWhenServerIgnoresPage lists from a real gRPC server that
// answers every page with page 1: ListAll must end with an error saying so,
// not ask for pages until its ctx ends.
func TestListAllStopsWhenServerIgnoresPage(t *testing.T) {
	t.Parallel()
	svc := &pageBlindProjects{total: 5}
	gs := grpc.NewServer()
	ambientv1.RegisterProjectServiceServer(gs, svc)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1) // Serve's result, read in the cleanup
	go func() { served <- gs.Serve(l) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := apiclient.New(apiclient.Config{Addr: l.Addr().String(), PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() }) //nolint:errcheck // closing a test client

	// The bound only keeps a broken ListAll from hanging the test.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := c.ListProjects(ctx)
	if !errors.Is(err, apiclient.ErrListNoProgress) {
		t.Fatalf("ListProjects = %d items, err %v; want an error wrapping ErrListNoProgress", len(got), err)
	}
	const want = "list projects: list page 4: apiclient: list makes no progress: 3 pages in a row brought no new object, 2 of 5 collected (does the server ignore the page parameter?)"
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
	if n := svc.calls.Load(); n != 4 {
		t.Errorf("%d list calls, want 4 (one page, then three that brought nothing new)", n)
	}
}
