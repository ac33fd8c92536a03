package app_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// waitRecreated waits until a session created now is published and the
// objects bucket holds it, the bucket was recreated with the informer's
// settings (its marker TTL), and inf leads and is ready again.
func (h *harness) waitRecreated(inf *informer, name string) {
	h.t.Helper()
	id := h.createSession(name).GetMetadata().GetId()
	key := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, id)
	testenv.Eventually(h.t, 60*time.Second, func() error {
		if err := h.published(id); err != nil {
			return err
		}
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		if _, ok := kv[key]; !ok {
			return fmt.Errorf("objects bucket lacks %s (%d keys)", key, len(kv))
		}
		return nil
	})
	h.waitLeaderReady(inf, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	if got := s.CachedInfo().Config.SubjectDeleteMarkerTTL; got != time.Minute {
		h.t.Errorf("recreated objects bucket's marker ttl %v, want the informer's 1m", got)
	}
}

// TestStreamAndBucketsDeletedAreRecreated: the events stream and the
// objects and leases buckets are deleted while the informer leads. The
// failed publish, KV write and lease renewal make it run its start-up
// set-up again and start a new term: the next session is published into
// the recreated stream and cached in the recreated bucket. Before, the
// informer retried for ever into nothing, with /readyz 200.
func TestStreamAndBucketsDeletedAreRecreated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(nil)

	ctx := t.Context()
	if err := h.js.DeleteStream(ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := h.js.DeleteKeyValue(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	if err := h.js.DeleteKeyValue(ctx, bus.BucketLeases); err != nil {
		t.Fatal(err)
	}
	h.waitRecreated(a, "after-delete")
}

// TestObjectsBucketDeletedIsRecreated: only the objects bucket is deleted
// while the informer leads; the next change's event is published, its KV
// write fails, and the informer recreates the bucket and starts a new
// term, after which the bucket holds the new session.
func TestObjectsBucketDeletedIsRecreated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(nil)
	if err := h.js.DeleteKeyValue(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	h.waitRecreated(a, "after-delete")
}

// TestNATSStoreLostIsRecreated: NATS restarts without its JetStream store
// (the stream and every bucket gone) while the informer leads. It takes
// the lease again into a recreated leases bucket, recreates the stream and
// the objects bucket, relists, and publishes a session created after the
// restart. Before, nobody led again and /readyz stayed 200.
func TestNATSStoreLostIsRecreated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(nil)

	h.nats.Shutdown()
	if err := os.RemoveAll(filepath.Join(h.nats.StoreDir(), "jetstream")); err != nil {
		t.Fatal(err)
	}
	if err := h.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	h.waitRecreated(a, "after-restart")
	// The term that published may still be the one from before the
	// restart: its lease key went with the store, so its next renewal
	// fails and a new term takes the lease in the recreated bucket. The
	// informer ends up leading there, and ready.
	testenv.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		kv, err := h.js.KeyValue(ctx, bus.BucketLeases)
		if err != nil {
			return fmt.Errorf("leases bucket: %w", err)
		}
		e, err := kv.Get(ctx, config.DefaultLeaseKey)
		if err != nil {
			return fmt.Errorf("lease key in the recreated bucket: %w", err)
		}
		if got := string(e.Value()); got != "a" {
			return fmt.Errorf("lease held by %q, want a", got)
		}
		code, body, err := a.httpGet("/readyz")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("readyz %d %s %v", code, body, err)
		}
		return nil
	})
}
