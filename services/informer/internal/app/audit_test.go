package app_test

import (
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestKVAuditRepairsBucket: the objects bucket changes under the leader the
// way a NATS server that rebuilt its store after kill -9 changed it in the
// chaos suite (nats-server#8505): the last value of a deleted object's
// purged key is back, and (the other way round) a published object's entry
// is gone. The leader's KV audit writes both again, and announces nothing:
// the stream already holds the truth.
func TestKVAuditRepairsBucket(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(6, 1)
	h.start("a", map[string]string{config.EnvAuditInterval: "200ms", config.EnvMarkerTTL: "1s"})
	h.waitConverged(live, bucket, 30*time.Second)
	ctx := t.Context()
	kv, err := h.js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	ids := h.sessionIDs()
	goneKey := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, ids[0])
	keptKey := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, ids[1])
	old, err := kv.Get(ctx, goneKey)
	if err != nil {
		t.Fatal(err)
	}
	h.deleteSession(ids[0])
	before := len(h.waitConverged(live, bucket, 30*time.Second))

	if _, err := kv.Put(ctx, goneKey, old.Value()); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, keptKey); err != nil {
		t.Fatal(err)
	}
	evs := h.waitConverged(live, bucket, 30*time.Second)
	if len(evs) != before {
		t.Errorf("the repair published %d events; it only writes KV", len(evs)-before)
	}
}
