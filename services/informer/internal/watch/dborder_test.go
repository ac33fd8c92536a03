package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// The tests in this file list through the in-memory API, which pages in the
// real server's database order: an update moves the object to the end, so
// the rows after it move up and the first object of the next page slips
// onto the page already read.

// dbOrder is a store that holds every session of an API, and a relist of
// it to run under changes.
type dbOrder struct {
	c     *apiclient.Client
	ids   []string // in creation order
	store *diff.Store[*ambientv1.Session]
	buf   *buffer[*ambientv1.Session]
}

// newDBOrder seeds n sessions and lists them once into a new store. While
// page 1 of the next list is read, change runs once (nil: updateFirst).
func newDBOrder(t *testing.T, n int, src func(c *apiclient.Client) Source[*ambientv1.Session], cfg Config, hooks Hooks,
	change func(t *testing.T, srv *memapi.Server, d *dbOrder)) (*dbOrder, *Watcher[*ambientv1.Session]) {
	t.Helper()
	srv := testenv.API(t)
	d := &dbOrder{c: testenv.APIClient(t, srv), store: diff.NewStore[*ambientv1.Session](), buf: newBuffer[*ambientv1.Session]()}
	for i := range n {
		s, err := d.c.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("s-%04d", i)})
		if err != nil {
			t.Fatal(err)
		}
		d.ids = append(d.ids, s.GetMetadata().GetId())
	}
	w := New(src(d.c), d.store, func(string) {}, cfg, hooks, slog.New(slog.DiscardHandler))
	if err := w.relist(t.Context(), d.buf); err != nil {
		t.Fatal(err)
	}
	if got := d.store.Len(); got != n {
		t.Fatalf("first list: %d sessions cached, want %d", got, n)
	}
	if change == nil {
		change = updateFirst
	}
	var once sync.Once
	srv.SetListHook(func(method string, page int32) {
		if method != ambientv1.SessionService_ListSessions_FullMethodName || page != 1 {
			return
		}
		once.Do(func() { change(t, srv, d) })
	})
	return d, w
}

// updateFirst updates the first session, and its UPDATED reaches the
// buffer as the watch would bring it.
func updateFirst(t *testing.T, srv *memapi.Server, d *dbOrder) {
	s, err := srv.Sessions().UpdateSession(context.Background(), &ambientv1.UpdateSessionRequest{Id: d.ids[0], Prompt: proto.String("moved")})
	if err != nil {
		t.Errorf("update during list: %v", err)
		return
	}
	d.buf.push(Event[*ambientv1.Session]{Type: ambientv1.EventType_EVENT_TYPE_UPDATED, ID: d.ids[0], Object: s})
}

// cached reports whether the store holds id.
func (d *dbOrder) cached(id string) bool {
	_, ok := d.store.Get(id)
	return ok
}

// TestUnlistedObjectsAreReadByID: with one pass, the update on page 1 makes
// the list miss the first session of page 2. It exists, so a read by id
// keeps it; a session deleted while nothing watched is gone on that read
// and only it leaves the cache.
func TestUnlistedObjectsAreReadByID(t *testing.T) {
	t.Parallel()
	const n = 600 // two pages of apiclient.DefaultPageSize (500)
	var found, gone int
	d, w := newDBOrder(t, n, Sessions, Config{ListPasses: 1}, Hooks{Unlisted: func(f, g int) { found, gone = f, g }}, nil)
	offline := d.ids[550] // on page 2, after the one the update makes slip
	if err := d.c.DeleteSession(t.Context(), offline); err != nil {
		t.Fatal(err)
	}
	if err := w.relist(t.Context(), d.buf); err != nil {
		t.Fatal(err)
	}
	skipped := d.ids[apiclient.DefaultPageSize] // first of page 2
	if !d.cached(skipped) || d.cached(offline) || d.store.Len() != n-1 {
		t.Fatalf("after the relist: skipped session cached %v, deleted one cached %v, %d cached; want true, false, %d",
			d.cached(skipped), d.cached(offline), d.store.Len(), n-1)
	}
	if found != 1 || gone != 1 {
		t.Fatalf("Unlisted hook: found %d, gone %d; want 1 and 1", found, gone)
	}
}

// TestListRepeatsAfterUpdates: an UPDATED during a list moves rows like a
// delete does, so the list runs again and its second pass shows the
// session the first one missed, with no read by id at all.
func TestListRepeatsAfterUpdates(t *testing.T) {
	t.Parallel()
	const n = 600 // two pages
	noGet := func(c *apiclient.Client) Source[*ambientv1.Session] {
		src := Sessions(c)
		src.Get = nil
		return src
	}
	d, w := newDBOrder(t, n, noGet, Config{}, Hooks{}, nil)
	if err := w.relist(t.Context(), d.buf); err != nil {
		t.Fatal(err)
	}
	if skipped := d.ids[apiclient.DefaultPageSize]; !d.cached(skipped) || d.store.Len() != n {
		t.Fatalf("after the relist: first session of page 2 cached %v, %d cached; want true, %d", d.cached(skipped), d.store.Len(), n)
	}
}

// TestDeleteSeenLateHidesNothing: a delete on page 1 while the list reads
// it shifts page 2 too, and its DELETED may reach the informer only after
// the list (or the server had not registered the watch yet), so no pass
// repeats. The session that slipped is read by id and stays; the deleted
// one was listed, and goes when its DELETED comes.
func TestDeleteSeenLateHidesNothing(t *testing.T) {
	t.Parallel()
	const n = 600 // two pages
	deleteFirst := func(t *testing.T, srv *memapi.Server, d *dbOrder) {
		if _, err := srv.Sessions().DeleteSession(context.Background(), &ambientv1.DeleteSessionRequest{Id: d.ids[0]}); err != nil {
			t.Errorf("delete during list: %v", err)
		}
	}
	d, w := newDBOrder(t, n, Sessions, Config{}, Hooks{}, deleteFirst)
	if err := w.relist(t.Context(), d.buf); err != nil {
		t.Fatal(err)
	}
	skipped := d.ids[apiclient.DefaultPageSize]
	if !d.cached(skipped) || d.store.Len() != n {
		t.Fatalf("after the relist: first session of page 2 cached %v, %d cached; want true, %d", d.cached(skipped), d.store.Len(), n)
	}
	w.applyLive([]Event[*ambientv1.Session]{{Type: ambientv1.EventType_EVENT_TYPE_DELETED, ID: d.ids[0]}})
	if d.cached(d.ids[0]) || !d.cached(skipped) || d.store.Len() != n-1 {
		t.Fatalf("after the late DELETED: deleted session cached %v, skipped one %v, %d cached; want false, true, %d",
			d.cached(d.ids[0]), d.cached(skipped), d.store.Len(), n-1)
	}
}

// TestUnlistedObjectsAreReadAtOnce: after a restart, every object deleted
// while no informer watched is read by id before its delete is published.
// The reads run confirmReads at a time, not one round trip after another
// (each read here returns only once confirmReads of them are running).
func TestUnlistedObjectsAreReadAtOnce(t *testing.T) {
	t.Parallel()
	const n = 3 * confirmReads
	var cached []*ambientv1.Session
	for i := range n {
		cached = append(cached, sess(fmt.Sprintf("gone-%02d", i), 1))
	}
	store := diff.NewStore[*ambientv1.Session]()
	store.Sync(cached, nil)

	var mu sync.Mutex
	inFlight, most := 0, 0
	all := make(chan struct{}) // closed once confirmReads reads ran at once
	var allOnce sync.Once
	src := Source[*ambientv1.Session]{
		Pages: Whole(func(context.Context) ([]*ambientv1.Session, error) { return nil, nil }), // all deleted
		Get: func(ctx context.Context, id string) (*ambientv1.Session, bool, error) {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			if inFlight == confirmReads {
				allOnce.Do(func() { close(all) })
			}
			mu.Unlock()
			defer func() {
				mu.Lock()
				inFlight--
				mu.Unlock()
			}()
			select {
			case <-all:
				return nil, false, nil
			case <-time.After(5 * time.Second):
				return nil, false, errors.New("reads by id ran one after another")
			}
		},
	}
	w := New(src, store, func(string) {}, Config{}, Hooks{}, slog.New(slog.DiscardHandler))
	if err := w.relist(t.Context(), newBuffer[*ambientv1.Session]()); err != nil {
		t.Fatal(err)
	}
	if most > confirmReads {
		t.Fatalf("%d reads at once, want at most %d", most, confirmReads)
	}
	if store.Len() != 0 {
		t.Fatalf("%d objects still cached after all were deleted", store.Len())
	}
}

// TestUnlistedReadRetried: a read by id that fails once (a timeout) is
// tried again instead of failing the whole relist, which then read every
// unlisted object again on its next attempt.
func TestUnlistedReadRetried(t *testing.T) {
	t.Parallel()
	store := diff.NewStore[*ambientv1.Session]()
	store.Sync([]*ambientv1.Session{sess("gone-a", 1), sess("gone-b", 1)}, nil)
	var mu sync.Mutex
	failed := map[string]bool{}
	src := Source[*ambientv1.Session]{
		Pages: Whole(func(context.Context) ([]*ambientv1.Session, error) { return nil, nil }), // both deleted
		Get: func(_ context.Context, id string) (*ambientv1.Session, bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if !failed[id] {
				failed[id] = true
				return nil, false, errors.New("deadline exceeded")
			}
			return nil, false, nil
		},
	}
	w := New(src, store, func(string) {}, Config{}, Hooks{}, slog.New(slog.DiscardHandler))
	if err := w.relist(t.Context(), newBuffer[*ambientv1.Session]()); err != nil {
		t.Fatalf("relist with one failed read per object: %v", err)
	}
	if store.Len() != 0 {
		t.Fatalf("%d objects still cached after both were deleted", store.Len())
	}
}
