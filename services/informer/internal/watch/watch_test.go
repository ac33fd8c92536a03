package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

func sess(id string, us int64) *ambientv1.Session {
	return &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.UnixMicro(us))}}
}

func ids(objs []*ambientv1.Session) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.GetMetadata().GetId()
	}
	slices.Sort(out)
	return out
}

// TestListRepeatsAfterDeletes covers offset pagination: a delete during the
// list shifts later pages, so one pass can miss an object that still
// exists. A delete seen on the watch makes the list run again, and the
// passes are merged.
func TestListRepeatsAfterDeletes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		passes [][]*ambientv1.Session // what each List call returns
		delete []bool                 // whether a DELETED arrives during that call
		max    int
		want   []string
		calls  int
	}{
		{
			name:   "no deletes: one pass",
			passes: [][]*ambientv1.Session{{sess("a", 1), sess("b", 1)}},
			delete: []bool{false},
			want:   []string{"a", "b"},
			calls:  1,
		},
		{
			name:   "delete shifts a page: second pass finds x",
			passes: [][]*ambientv1.Session{{sess("a", 1), sess("c", 1)}, {sess("a", 1), sess("c", 2), sess("x", 1)}},
			delete: []bool{true, false},
			want:   []string{"a", "c", "x"},
			calls:  2,
		},
		{
			name:   "deletes every time: bounded passes",
			passes: [][]*ambientv1.Session{{sess("a", 1)}, {sess("b", 1)}, {sess("c", 1)}, {sess("d", 1)}},
			delete: []bool{true, true, true, true},
			max:    3,
			want:   []string{"a", "b", "c"},
			calls:  3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buf := newBuffer[*ambientv1.Session]()
			calls := 0
			src := Source[*ambientv1.Session]{Pages: Whole(func(context.Context) ([]*ambientv1.Session, error) {
				i := calls
				calls++
				if tc.delete[i] {
					buf.push(Event[*ambientv1.Session]{Type: ambientv1.EventType_EVENT_TYPE_DELETED, ID: "gone"})
				}
				return tc.passes[i], nil
			})}
			store := diff.NewStore[*ambientv1.Session]()
			w := New(src, store, func(string) {}, Config{ListPasses: tc.max}, Hooks{}, slog.New(slog.DiscardHandler))
			l := store.StartList()
			if _, err := w.list(t.Context(), buf, l); err != nil {
				t.Fatal(err)
			}
			l.Finish(nil)
			var got []*ambientv1.Session
			for _, id := range []string{"a", "b", "c", "d", "x"} {
				if o, ok := store.Get(id); ok {
					got = append(got, o)
				}
			}
			if !slices.Equal(ids(got), tc.want) || calls != tc.calls {
				t.Fatalf("listed %v in %d calls, want %v in %d", ids(got), calls, tc.want, tc.calls)
			}
			if c, ok := store.Get("c"); ok && tc.calls == 2 && c.GetMetadata().GetUpdatedAt().AsTime().UnixMicro() != 2 {
				t.Fatalf("c kept the older state of the first pass")
			}
		})
	}
}

// chanStream is a watch stream fed by a channel; closing it is a clean EOF.
type chanStream struct {
	done <-chan struct{} // the stream's ctx.Done()
	ch   <-chan Event[*ambientv1.Session]
}

func (s chanStream) Recv() (Event[*ambientv1.Session], error) {
	select {
	case ev, ok := <-s.ch:
		if !ok {
			return Event[*ambientv1.Session]{}, io.EOF
		}
		return ev, nil
	case <-s.done:
		return Event[*ambientv1.Session]{}, context.Canceled
	}
}

// TestRunRelistsAfterEOF: a stream that ends is reopened and the resource
// listed again; changes made meanwhile reach the cache.
func TestRunRelistsAfterEOF(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	state := []*ambientv1.Session{sess("a", 1)} // guarded by mu
	streams := make(chan chan Event[*ambientv1.Session], 4)
	var lists, reconnects atomic.Int32
	src := Source[*ambientv1.Session]{
		Pages: Whole(func(context.Context) ([]*ambientv1.Session, error) {
			lists.Add(1)
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(state), nil
		}),
		Watch: func(ctx context.Context) (Stream[*ambientv1.Session], error) {
			ch := make(chan Event[*ambientv1.Session])
			streams <- ch
			return chanStream{done: ctx.Done(), ch: ch}, nil
		},
	}
	store := diff.NewStore[*ambientv1.Session]()
	var dirty sync.Map
	w := New(src, store, func(id string) { dirty.Store(id, true) },
		Config{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond},
		Hooks{Reconnect: func(error, time.Duration) { reconnects.Add(1) }}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // Run's result
	// Owned by the test: cancelled and awaited below.
	go func() { done <- w.Run(ctx) }()
	first := <-streams
	testenv.Eventually(t, 5*time.Second, func() error {
		if !w.Connected() {
			return errors.New("not synced")
		}
		return nil
	})
	// Change while the stream is about to end, then end it.
	mu.Lock()
	state = append(state, sess("b", 2))
	mu.Unlock()
	close(first)
	<-streams
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, ok := store.Get("b"); !ok || lists.Load() < 2 || reconnects.Load() != 1 {
			return errors.New("b not relisted yet")
		}
		// Checked here, not after: the relist stores b a moment before it
		// enqueues it.
		if _, ok := dirty.Load("b"); !ok {
			return errors.New("b relisted but not enqueued")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestLiveEventsFlowDuringRelist: a relist reads many pages (seconds at
// 100,000 objects, with every reconnect and resync); a change made while it
// runs reaches the queue between pages, not after the last one, and the
// finished list does not undo it.
func TestLiveEventsFlowDuringRelist(t *testing.T) {
	t.Parallel()
	buf := newBuffer[*ambientv1.Session]()
	enqueued := make(chan string, 16)
	var list Source[*ambientv1.Session]
	list.Pages = func(ctx context.Context, page func([]*ambientv1.Session, int) error) error {
		if err := page([]*ambientv1.Session{sess("a", 1), sess("b", 1)}, 3); err != nil {
			return err
		}
		// A change of a, made after its page was read.
		buf.push(Event[*ambientv1.Session]{Type: ambientv1.EventType_EVENT_TYPE_UPDATED, ID: "a", Object: sess("a", 2)})
		if err := page([]*ambientv1.Session{sess("c", 1)}, 3); err != nil {
			return err
		}
		// The next page is read only once a's change is queued.
		select {
		case id := <-enqueued:
			if id != "a" {
				return fmt.Errorf("queued %s during the list, want a", id)
			}
		case <-time.After(5 * time.Second):
			return errors.New("a's change was not queued while the list ran")
		}
		return page(nil, 3)
	}
	store := diff.NewStore[*ambientv1.Session]()
	store.Sync([]*ambientv1.Session{sess("a", 1), sess("b", 1)}, nil)
	// One pass: the UPDATED would make the list run again (movesRows),
	// and this scripted list tells its story once.
	w := New(list, store, func(id string) { enqueued <- id }, Config{ListPasses: 1}, Hooks{}, slog.New(slog.DiscardHandler))
	if err := w.relist(t.Context(), buf); err != nil {
		t.Fatal(err)
	}
	if a, _ := store.Get("a"); a.GetMetadata().GetUpdatedAt().AsTime().UnixMicro() != 2 {
		t.Fatalf("a = %v after the list, want the live change (2)", a.GetMetadata().GetUpdatedAt().AsTime().UnixMicro())
	}
	if _, ok := store.Get("c"); !ok {
		t.Fatal("c, listed, is not in the store")
	}
}

// TestListsAgainWhenTheStreamStartedDuringTheList: events that arrive
// while the first list runs (none before it) prove the server registered
// the watch, but maybe only part-way through the list: a change made
// between the list's read and the registration is on neither. The cycle
// lists again at once, without waiting for ConfirmAfter (an hour here).
func TestListsAgainWhenTheStreamStartedDuringTheList(t *testing.T) {
	t.Parallel()
	ch := make(chan Event[*ambientv1.Session]) // unbuffered: a send returns once the receive loop took it
	var lists atomic.Int32
	src := Source[*ambientv1.Session]{
		Pages: Whole(func(ctx context.Context) ([]*ambientv1.Session, error) {
			if lists.Add(1) > 1 {
				return []*ambientv1.Session{sess("a", 2), sess("b", 2), sess("c", 2)}, nil
			}
			// The stream starts during the first list. The second send
			// returns only after the receive loop buffered the first.
			for _, id := range []string{"b", "c"} {
				select {
				case ch <- Event[*ambientv1.Session]{Type: ambientv1.EventType_EVENT_TYPE_CREATED, ID: id, Object: sess(id, 2)}:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return []*ambientv1.Session{sess("a", 1)}, nil // a changed to 2 before the registration
		}),
		Watch: func(ctx context.Context) (Stream[*ambientv1.Session], error) {
			return chanStream{done: ctx.Done(), ch: ch}, nil
		},
	}
	store := diff.NewStore[*ambientv1.Session]()
	w := New(src, store, func(string) {}, Config{ConfirmAfter: time.Hour}, Hooks{}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1) // Run's result
	// Owned by the test: cancelled and awaited below.
	go func() { done <- w.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, func() error {
		if a, ok := store.Get("a"); !ok || a.GetMetadata().GetUpdatedAt().AsTime().UnixMicro() != 2 {
			return fmt.Errorf("a = %v after %d lists, want its change (2)", a.GetMetadata().GetUpdatedAt(), lists.Load())
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
