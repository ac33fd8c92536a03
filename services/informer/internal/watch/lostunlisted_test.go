package watch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// TestLostEntryMissedByAListingIsNotDeleted: the events stream was lost
// alone, so Lead loads every objects-bucket entry as a state of the lost
// stream (diff.Store.LoadLost: published, no desired state). The first
// listing of the term runs under an update that makes its pages miss the
// first session of page 2 (the server's order moves under the list, as
// in TestUnlistedObjectsAreReadByID). That session exists: it must be
// read by id and announced ADDED, never announced DELETED.
func TestLostEntryMissedByAListingIsNotDeleted(t *testing.T) {
	t.Parallel()
	deleteFirst := func(t *testing.T, srv *memapi.Server, d *dbOrder) {
		if _, err := srv.Sessions().DeleteSession(context.Background(), &ambientv1.DeleteSessionRequest{Id: d.ids[0]}); err != nil {
			t.Errorf("delete during list: %v", err)
		}
	}
	for name, tc := range map[string]struct {
		cfg    Config
		change func(t *testing.T, srv *memapi.Server, d *dbOrder)
	}{
		"one pass, update on page 1":                {Config{ListPasses: 1}, updateFirst},
		"default passes, delete seen late (page 1)": {Config{}, deleteFirst},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lostMissedByList(t, tc.cfg, tc.change)
		})
	}
}

func lostMissedByList(t *testing.T, cfg Config, change func(t *testing.T, srv *memapi.Server, d *dbOrder)) {
	const n = 600 // two pages of apiclient.DefaultPageSize (500)
	srv := testenv.API(t)
	d := &dbOrder{c: testenv.APIClient(t, srv), store: diff.NewStore[*ambientv1.Session](), buf: newBuffer[*ambientv1.Session]()}
	for i := range n {
		s, err := d.c.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("s-%04d", i)})
		if err != nil {
			t.Fatal(err)
		}
		d.ids = append(d.ids, s.GetMetadata().GetId())
		// Its entry in the objects bucket, older than the recreated stream.
		if !d.store.LoadLost(s, uint64(i+1)) {
			t.Fatal("LoadLost failed")
		}
	}
	var found, gone int
	w := New(Sessions(d.c), d.store, func(string) {}, cfg, Hooks{Unlisted: func(f, g int) { found, gone = f, g }}, slog.New(slog.DiscardHandler))
	var once sync.Once
	srv.SetListHook(func(method string, page int32) {
		if method != ambientv1.SessionService_ListSessions_FullMethodName || page != 1 {
			return
		}
		once.Do(func() { change(t, srv, d) })
	})
	if err := w.relist(t.Context(), d.buf); err != nil {
		t.Fatal(err)
	}
	skipped := d.ids[apiclient.DefaultPageSize] // first of page 2
	if c, ok := d.store.Next(skipped); !ok || c.Type != eventsv1.EventType_EVENT_TYPE_ADDED {
		t.Fatalf("session %s, which exists and the list missed: Next = %v %v (unlisted found %d, gone %d); want an ADDED, never a DELETED of a live session",
			skipped, ok, c.Type, found, gone)
	}
}
