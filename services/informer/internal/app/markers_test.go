package app_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// kvMessages returns the number of messages (values and markers) in bucket.
func kvMessages(ctx context.Context, js jetstream.JetStream, bucket string) (uint64, error) {
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// cycles creates and deletes n sessions through the in-memory API, waiting
// for each batch's events, so the informer publishes every ADDED and
// DELETED (nothing coalesces away).
func cycles(tb testing.TB, api interface {
	Sessions() ambientv1.SessionServiceServer
	Dropped() int64
}, n int, published func() (uint64, error), base uint64) {
	tb.Helper()
	ctx := context.Background()
	const batch = 100
	for done := 0; done < n; done += batch {
		ids := make([]string, 0, batch)
		for i := range min(batch, n-done) {
			s, err := api.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("cycle-%d", done+i), Prompt: proto.String("x")})
			if err != nil {
				tb.Fatal(err)
			}
			ids = append(ids, s.GetMetadata().GetId())
		}
		want := base + 2*uint64(done) + uint64(len(ids))
		if err := testenv.Poll(time.Minute, func() error {
			if got, err := published(); err != nil || got < want {
				return fmt.Errorf("stream has %d of %d events (api dropped %d): %v", got, want, api.Dropped(), err)
			}
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
		for _, id := range ids {
			if _, err := api.Sessions().DeleteSession(ctx, &ambientv1.DeleteSessionRequest{Id: id}); err != nil {
				tb.Fatal(err)
			}
		}
		want += uint64(len(ids))
		if err := testenv.Poll(time.Minute, func() error {
			if got, err := published(); err != nil || got < want {
				return fmt.Errorf("stream has %d of %d events (api dropped %d): %v", got, want, api.Dropped(), err)
			}
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestDeleteMarkersExpire is issue 14 point 4 for the informer: after
// create+delete cycles KV ambient-objects held one delete marker per object
// ever deleted. Markers now expire (OBJECTS_MARKER_TTL), the bucket's
// message count returns to within 10 % of its value before, and a restarted
// informer still diffs exactly: no deleted object is announced again, a
// delete made while it was down is announced once.
func TestDeleteMarkersExpire(t *testing.T) {
	t.Parallel()
	// In-process changes come faster than a loaded -race run drains the
	// watch; a larger server buffer keeps this test about markers.
	h := newHarness(t, memapi.WithWatchBuffer(10_000))
	h.seed(50, 2)
	fast := map[string]string{config.EnvMarkerTTL: "1s"}
	a := h.start("a", fast)
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	ctx := context.Background()
	base, err := kvMessages(ctx, h.js, bucket)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	cycles(t, h.api, n, func() (uint64, error) { return h.streamCount(live) }, uint64(before))
	testenv.Eventually(t, 30*time.Second, func() error {
		got, err := kvMessages(ctx, h.js, bucket)
		if err != nil {
			return err
		}
		if float64(got) > float64(base)*1.1 {
			return fmt.Errorf("bucket holds %d messages after %d create+delete cycles, %d before", got, n, base)
		}
		return nil
	})

	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	before = len(h.streamEvents(live))
	gone := h.sessionIDs()[0]
	h.deleteSession(gone)
	h.createSession("created-while-down")
	b := h.start("b", fast)
	h.waitLeaderReady(b, 30*time.Second)
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/DELETED": 1, "sessions/ADDED": 1})
	if evs[len(evs)-1].GetObjectId() != gone && evs[len(evs)-2].GetObjectId() != gone {
		t.Errorf("the delete made while down is not among the new events")
	}
}

// TestOldDeleteMarkersExpire: a bucket written by an informer without
// marker TTLs (markers that never expire) is updated in place, and the new
// leader sets its old markers to expire.
func TestOldDeleteMarkersExpire(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(5, 1)
	ctx := context.Background()
	old, err := h.js.CreateKeyValue(ctx, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		key := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, fmt.Sprintf("old-%d", i))
		if _, err := old.Put(ctx, key, []byte{}); err != nil {
			t.Fatal(err)
		}
		if err := old.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	h.start("a", map[string]string{config.EnvMarkerTTL: "1s"})
	h.waitConverged(live, bucket, 30*time.Second)
	testenv.Eventually(t, 30*time.Second, func() error {
		got, err := kvMessages(ctx, h.js, bucket)
		if err != nil {
			return err
		}
		if got != 5+1+1 {
			return fmt.Errorf("bucket holds %d messages, want the 7 live objects", got)
		}
		return nil
	})
	st, err := old.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.(*jetstream.KeyValueBucketStatus).LimitMarkerTTL(); got != time.Second {
		t.Fatalf("bucket LimitMarkerTTL = %v, want 1s", got)
	}
}

// TestDeleteDuringPublish: a session deleted while its ADDED is being
// published is announced as DELETED. Before the fix the delete did not
// look dirty (nothing published yet), the worker ignored that the object
// changed under it, and consumers and KV kept the session until the next
// resync.
func TestDeleteDuringPublish(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(2, 1)
	var self atomic.Pointer[informer]
	var once sync.Once
	hookErr := make(chan error, 1) // the hook's outcome, once
	hook := app.WithAfterPublish(func(ctx context.Context, ev *eventsv1.ResourceEvent) error {
		if ev.GetObject().GetSession().GetName() != "racer" || ev.GetType() != eventsv1.EventType_EVENT_TYPE_ADDED {
			return nil
		}
		once.Do(func() {
			cached := self.Load().metric("informer_cache_objects", `resource="sessions"`)
			_, err := h.api.Sessions().DeleteSession(ctx, &ambientv1.DeleteSessionRequest{Id: ev.GetObjectId()})
			if err == nil {
				// The delete reached the cache while the ADDED is in flight.
				err = testenv.Poll(10*time.Second, func() error {
					if got := self.Load().metric("informer_cache_objects", `resource="sessions"`); got != cached-1 {
						return fmt.Errorf("cached sessions %v, want %v", got, cached-1)
					}
					return nil
				})
			}
			hookErr <- err
		})
		return nil
	})
	inf := h.start("a", nil, hook)
	self.Store(inf)
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	h.createSession("racer")
	if err := <-hookErr; err != nil {
		t.Fatal(err)
	}
	evs := h.waitConverged(live, bucket, 30*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 1, "sessions/DELETED": 1})
}
