package app_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
)

// TestDeletesAnnouncedAfterObjectsBucketLost: the objects bucket is lost
// while no informer runs (deleted, purged, or gone with a NATS server
// restarted without its store) and sessions are deleted from the API
// meanwhile: two plain ones and one whose last event is a reference event
// (over the payload limit; the bucket kept the state before it that
// fitted). All their events lie more than the tail margin (8 here,
// publish.TailMargin's 8,192 in production) before the stream's end.
// Before, the new leader's cache held only the tail's objects and no
// DELETED was ever published for the others: every consumer kept them.
// Now the leader finds the bucket empty while the stream holds events,
// rebuilds the published state from each object's last event
// (informer_cache_rebuilds_total), announces the deletes once, and writes
// the bucket back.
func TestDeletesAnnouncedAfterObjectsBucketLost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		lose func(h *harness)
	}{
		{name: "deleted", lose: func(h *harness) {
			if err := h.js.DeleteKeyValue(h.t.Context(), bucket); err != nil {
				h.t.Fatal(err)
			}
		}},
		{name: "purged", lose: func(h *harness) {
			s, err := h.js.Stream(h.t.Context(), "KV_"+bucket)
			if err != nil {
				h.t.Fatal(err)
			}
			if err := s.Purge(h.t.Context()); err != nil {
				h.t.Fatal(err)
			}
		}},
		{name: "store lost", lose: func(h *harness) {
			h.nats.Shutdown()
			// The bucket's store only: the events stream survives.
			dir := filepath.Join(h.nats.StoreDir(), "jetstream", "$G", "streams", "KV_"+bucket)
			if _, err := os.Stat(dir); err != nil {
				h.t.Fatalf("the bucket's store: %v", err)
			}
			if err := os.RemoveAll(dir); err != nil {
				h.t.Fatal(err)
			}
			if err := h.nats.Restart(); err != nil {
				h.t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testBucketLost(t, tc.lose)
		})
	}
}

func testBucketLost(t *testing.T, lose func(h *harness)) {
	const margin = 8
	h := newHarness(t)
	h.seed(4, 1)
	a := h.start("a", nil, app.WithTailMargin(margin))
	h.waitConverged(live, bucket, 30*time.Second)
	if got := a.metric("informer_cache_rebuilds_total"); got != 0 {
		t.Errorf("first start, empty stream: informer_cache_rebuilds_total = %v, want 0", got)
	}

	// A session that fits, then grows over the payload limit: its last
	// event is a reference event, and the bucket keeps the state before.
	limit := int(h.js.Conn().MaxPayload())
	big, err := h.c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "big", ProjectId: proto.String("proj-0000"), Annotations: annotations(600 << 10)})
	if err != nil {
		t.Fatal(err)
	}
	bigID := big.GetMetadata().GetId()
	if _, err := h.c.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: bigID, Annotations: annotations(limit + limit/2)}); err != nil {
		t.Fatal(err)
	}
	h.waitAnnounced(bigID, "grown over the limit")

	// Later events: every event of the sessions deleted below lies more
	// than the margin before the stream's end and KV's position.
	for i := range margin + 2 {
		h.createSession(fmt.Sprintf("later-%d", i))
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		ss, ps, st := h.api.Len()
		n, err := h.kvKeyCount(bucket)
		if err != nil {
			return err
		}
		if n != ss+ps+st {
			return fmt.Errorf("kv has %d keys, api %d objects", n, ss+ps+st)
		}
		return nil
	})
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	// No informer runs: the bucket is lost, and sessions are deleted.
	lose(h)
	deleted := append(h.sessionIDs()[:2:2], bigID)
	for _, id := range deleted {
		h.deleteSession(id)
	}

	b := h.start("b", nil, app.WithTailMargin(margin))
	// Converged: the stream, replayed, holds what the API holds (each
	// delete announced, no second ADDED), and so does the bucket.
	evs := h.waitConverged(live, bucket, 30*time.Second)
	for _, id := range deleted {
		n := 0
		for _, ev := range evs {
			if ev.GetObjectId() == id && ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d DELETED of session %s, want 1", n, id)
		}
	}
	for _, res := range []string{events.TokenSessions, events.TokenProjects} {
		if got := b.metric("informer_cache_rebuilds_total", `resource="`+res+`"`); got != 1 {
			t.Errorf("informer_cache_rebuilds_total{resource=%q} = %v, want 1", res, got)
		}
	}
	// Every rebuilt entry written: the rebuild's owed floor is gone.
	kv, err := h.js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		e, err := kv.Get(t.Context(), publish.OwedKey[*ambientv1.Session]())
		switch {
		case err == nil:
			return fmt.Errorf("owed floor %s still set, want none", e.Value())
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		return nil
	})

	// The bucket back, the next leader rebuilds nothing and publishes
	// nothing.
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	c := h.start("c", nil, app.WithTailMargin(margin))
	h.waitLeaderReady(c, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	if got := c.metric("informer_cache_rebuilds_total"); got != 0 {
		t.Errorf("start after the rebuild: informer_cache_rebuilds_total = %v, want 0", got)
	}
	if n := len(h.streamEvents(live)); n != len(evs) {
		t.Errorf("start after the rebuild published %d events, want none", n-len(evs))
	}
}

// BenchmarkCacheRebuild measures a leader's start after the objects bucket
// was lost with BENCH_SESSIONS sessions in the stream (default 100000) and
// 1 % of them deleted meanwhile: rebuild-s is from its start until every
// delete is in the stream and every rebuilt entry written back (the owed
// floor gone); the read of the stream alone is the duration of its log
// line "objects bucket lacks what the events stream holds".
func BenchmarkCacheRebuild(b *testing.B) {
	n := benchSessions()
	for b.Loop() {
		e := newBenchEnv(b)
		e.seed(n)
		stopA := e.start(b, config.EnvInstanceID, "bench-a")
		e.waitCount(live, uint64(n), 30*time.Minute)
		leases, err := e.js.KeyValue(b.Context(), bus.BucketLeases)
		if err != nil {
			b.Fatal(err)
		}
		kv, err := e.js.KeyValue(b.Context(), bucket)
		if err != nil {
			b.Fatal(err)
		}
		// Every KV write landed (a leader stopping now leaves nothing owed
		// but what a lost bucket takes with it).
		if err := testenv.Poll(10*time.Minute, func() error {
			st, err := kv.Status(b.Context())
			if err != nil {
				return err
			}
			if st.Values() < uint64(n) {
				return fmt.Errorf("objects bucket holds %d of %d", st.Values(), n)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		stopA()
		// Released on shutdown: the lease key goes once a's term ended.
		if err := testenv.Poll(time.Minute, func() error {
			if _, err := leases.Get(b.Context(), "informer"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("lease still held (%v)", err)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if err := e.js.DeleteKeyValue(b.Context(), bucket); err != nil {
			b.Fatal(err)
		}
		var ids []string
		for page := int32(1); len(ids) < max(n/100, 1); page++ {
			l, err := e.api.Sessions().ListSessions(b.Context(), &ambientv1.ListSessionsRequest{Page: page, Size: memapi.MaxPageSize})
			if err != nil || len(l.GetItems()) == 0 {
				b.Fatalf("list page %d: %v", page, err)
			}
			for _, s := range l.GetItems() {
				ids = append(ids, s.GetMetadata().GetId())
			}
		}
		deleted := max(n/100, 1)
		for _, id := range ids[:deleted] {
			if _, err := e.api.Sessions().DeleteSession(b.Context(), &ambientv1.DeleteSessionRequest{Id: id}); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		e.start(b, config.EnvInstanceID, "bench-b")
		e.waitCount(live, uint64(n+deleted), 10*time.Minute)
		if err := testenv.Poll(10*time.Minute, func() error {
			kv, err := e.js.KeyValue(b.Context(), bucket)
			if err != nil {
				return err
			}
			if _, err := kv.Get(b.Context(), publish.OwedKey[*ambientv1.Session]()); !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("owed floor still set (%v)", err)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "rebuild-s")
		b.ReportMetric(float64(deleted), "deletes")
	}
}
