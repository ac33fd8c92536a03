package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
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
	}, nil)
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
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint([]string{"a@1", "b@1", "a@2", "c@1"}); fmt.Sprint(got) != want {
		t.Fatalf("handed over %v, want %v", got, want)
	}
}

// TestListPagesUnderChurn: every page read is followed by about a page of
// updates to a hot set of sessions, and the server moves an updated row to
// the end of its order, so the last pages hold only sessions handed over
// before, in newer states. The list must hand those over and end, not
// fail as if the server ignored the page parameter (the sessions the
// moves pushed behind the cursor are read by id: confirmUnlisted).
func TestListPagesUnderChurn(t *testing.T) {
	t.Parallel()
	const n, hot, size = 400, 60, 20
	srv := testenv.API(t)
	c := testenv.APIClient(t, srv)
	ids := make([]string, 0, n)
	for i := range n {
		s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("s-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.GetMetadata().GetId())
	}
	round := 0
	srv.SetListHook(func(_ string, page int32) {
		if page < 3 {
			return
		}
		round++
		p := fmt.Sprintf("r%d", round)
		for _, id := range ids[:hot] {
			if _, err := srv.Sessions().UpdateSession(context.Background(), &ambientv1.UpdateSessionRequest{Id: id, Prompt: &p}); err != nil {
				t.Error(err)
			}
		}
	})
	defer srv.SetListHook(nil)
	fetch := func(ctx context.Context, page, _ int32) (*ambientv1.ListSessionsResponse, error) {
		return c.Sessions().ListSessions(ctx, &ambientv1.ListSessionsRequest{Page: page, Size: size})
	}
	handed := map[string]string{} // id -> last prompt handed over
	err := listPages(t.Context(), fetch, func(items []*ambientv1.Session, _ int) error {
		for _, o := range items {
			handed[o.GetMetadata().GetId()] = o.GetPrompt()
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatalf("list under churn: %v", err)
	}
	if round < 3 {
		t.Fatalf("only %d rounds of updates: the test did not churn", round)
	}
	// The hot sessions came again after each round; the last copy handed
	// over is from a late round, not the first page's.
	if p := handed[ids[0]]; p == "" {
		t.Errorf("hot session %s last handed over unchanged, want a newer copy", ids[0])
	}
}

// TestWatcherSyncsPagesOverRecvLimit: a page of sessions whose sum is over
// the client's receive limit (apiclient.MaxRecvMsgSize, scaled down here)
// fails with ResourceExhausted however often it is asked for. The list
// asks again in smaller pages and the watcher syncs; it used to fail every
// list for ever.
func TestWatcherSyncsPagesOverRecvLimit(t *testing.T) {
	t.Parallel()
	srv := testenv.API(t)
	const n = 3
	for i := range n {
		p := strings.Repeat("x", 30<<10)
		if _, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("big-%d", i), Prompt: &p}); err != nil {
			t.Fatal(err)
		}
	}
	c := testenv.APIClient(t, srv, func(cfg *apiclient.Config) {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<10)))
	})
	store := diff.NewStore[*ambientv1.Session]()
	w := New(Sessions(c), store, func(string) {}, Config{BackoffInitial: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, Hooks{}, slog.New(slog.DiscardHandler))
	runWatcher(t, w.Run)
	testenv.Eventually(t, 10*time.Second, func() error {
		if w.Syncs() == 0 || store.Len() != n {
			return fmt.Errorf("syncs %d, %d of %d sessions cached", w.Syncs(), store.Len(), n)
		}
		return nil
	})
}

// TestListAbsurdTotalAllocatesLittle: a page whose metadata.total is
// absurd (a server bug: an int32 from the wire) used to size the list's id
// map and the listing's buffers for that many objects before a second
// object arrived: 244 MiB for a claimed 2,000,000, 256 GiB for 2^31. The
// listing believes a total up to diff's million; the list's id map grows
// with what arrives. Not parallel: it measures the process's allocations.
func TestListAbsurdTotalAllocatesLittle(t *testing.T) {
	const claimed = 3 << 20
	fetch := func(_ context.Context, page, _ int32) (*ambientv1.ListSessionsResponse, error) {
		if page > 1 {
			return &ambientv1.ListSessionsResponse{}, nil
		}
		return &ambientv1.ListSessionsResponse{Metadata: &ambientv1.ListMeta{Total: claimed}, Items: []*ambientv1.Session{sess("a", 1)}}, nil
	}
	store := diff.NewStore[*ambientv1.Session]()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	l := store.StartList()
	err := listPages(t.Context(), fetch, func(items []*ambientv1.Session, total int) error {
		l.Expect(total, len(items))
		l.Add(items)
		return nil
	}, nil)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	l.Finish(nil)
	if got := after.TotalAlloc - before.TotalAlloc; got > 150<<20 {
		t.Errorf("a list of one object claiming a total of %d allocated %.1f MiB, want under 150", claimed, float64(got)/(1<<20))
	}
}
