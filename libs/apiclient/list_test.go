package apiclient_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
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

// churnSessions creates n sessions on a fresh memapi and returns it, a
// client with pages of size and the sessions' ids in creation order.
func churnSessions(t *testing.T, n int, size int32) (*memapi.Server, *apiclient.Client, []string) {
	t.Helper()
	srv := testenv.API(t)
	ids := make([]string, 0, n)
	for i := range n {
		s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "s" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.GetMetadata().GetId())
	}
	return srv, testenv.APIClient(t, srv, func(c *apiclient.Config) { c.PageSize = size }), ids
}

// TestListAllUnderChurn: while a list pages through the table, every page
// read is followed by about a page of updates to a hot set of sessions.
// The server moves an updated row to the end of its order, so the last
// pages hold only sessions seen earlier in the list, in newer states. The
// list must end with those states (the rows the moves pushed behind the
// cursor are missing: the informer reads those by id), not fail as if the
// server ignored the page parameter.
func TestListAllUnderChurn(t *testing.T) {
	t.Parallel()
	const n, hot, size = 400, 60, 20
	srv, c, ids := churnSessions(t, n, size)
	round := 0
	var want map[string]string // id -> last prompt written before the last page
	srv.SetListHook(func(_ string, page int32) {
		if page < 3 {
			return
		}
		round++
		want = map[string]string{}
		for _, id := range ids[:hot] {
			p := "r" + strconv.Itoa(round)
			if _, err := srv.Sessions().UpdateSession(context.Background(), &ambientv1.UpdateSessionRequest{Id: id, Prompt: &p}); err != nil {
				t.Error(err)
			}
			want[id] = p
		}
	})
	got, err := c.ListSessions(t.Context())
	srv.SetListHook(nil)
	if err != nil {
		t.Fatalf("list under churn: %v", err)
	}
	seen := map[string]bool{}
	for _, s := range got {
		if seen[s.GetMetadata().GetId()] {
			t.Errorf("session %s listed twice", s.GetMetadata().GetId())
		}
		seen[s.GetMetadata().GetId()] = true
	}
	if len(got) < n-2*hot {
		t.Errorf("listed %d of %d sessions", len(got), n)
	}
	if round < 3 {
		t.Errorf("only %d rounds of updates: the test did not churn", round)
	}
}

// churningBlindSessions is a SessionService that ignores the page
// parameter and changes every object it lists on every call: each page
// brings changed copies (which count as progress), never a new object.
type churningBlindSessions struct {
	ambientv1.UnimplementedSessionServiceServer
	total int32
	calls atomic.Int32
}

func (s *churningBlindSessions) ListSessions(_ context.Context, req *ambientv1.ListSessionsRequest) (*ambientv1.ListSessionsResponse, error) {
	call := s.calls.Add(1)
	resp := &ambientv1.ListSessionsResponse{Metadata: &ambientv1.ListMeta{Page: 1, Size: req.GetSize(), Total: s.total}}
	for i := range min(req.GetSize(), s.total) {
		id := string('a' + i)
		resp.Items = append(resp.Items, &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.Unix(int64(call), 0))}, Name: id})
	}
	return resp, nil
}

// TestListAllStopsWhenBlindServerChurns: a server that ignores the page
// parameter while its objects keep changing brings a changed copy on every
// page; the list must still end, after about twice the total in items.
func TestListAllStopsWhenBlindServerChurns(t *testing.T) {
	t.Parallel()
	svc := &churningBlindSessions{total: 5}
	gs := grpc.NewServer()
	ambientv1.RegisterSessionServiceServer(gs, svc)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
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

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := c.ListSessions(ctx)
	if !errors.Is(err, apiclient.ErrListNoProgress) {
		t.Fatalf("ListSessions = %d items, err %v; want an error wrapping ErrListNoProgress", len(got), err)
	}
	// 2 items a page: the list gives up once it received more than
	// 2*5 + 3*2 = 16 items, on page 9.
	if n := svc.calls.Load(); n != 9 {
		t.Errorf("%d list calls, want 9: %v", n, err)
	}
}

// TestListAllShrinksPagesOverRecvLimit: a page larger than the client's
// receive limit fails with ResourceExhausted whatever the retry; the list
// asks again with half the page size, from the same offset, until the
// pages fit, and logs each halving.
func TestListAllShrinksPagesOverRecvLimit(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	const n = 7
	for i := range n {
		p := strings.Repeat("x", 20<<10)
		if _, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "big" + strconv.Itoa(i), Prompt: &p}); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) {
		cfg.PageSize = 8
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		// Two sessions fit, three do not.
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(50<<10)))
	})
	got, err := c.ListSessions(t.Context())
	if err != nil {
		t.Fatalf("list with pages over the receive limit: %v", err)
	}
	names := map[string]bool{}
	for _, s := range got {
		names[s.GetName()] = true
	}
	if len(got) != n || len(names) != n {
		t.Errorf("listed %d sessions (%d names), want %d", len(got), len(names), n)
	}
	for _, want := range []string{"from=8 to=4", "from=4 to=2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
