package app_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
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

// TestKVAuditLeavesOversizeObjectsAlone: a session over the payload limit
// from its first state has no KV entry (nothing of it ever fitted), and
// that is no disagreement: the audit must not flag it, and write nothing,
// every interval for as long as the object lives.
func TestKVAuditLeavesOversizeObjectsAlone(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(2, 1)
	inf := h.start("a", map[string]string{config.EnvAuditInterval: "100ms"})
	h.waitConverged(live, bucket, 30*time.Second)
	before := len(h.rawEvents(live))
	limit := int(h.js.Conn().MaxPayload())
	big, err := h.c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "big", ProjectId: proto.String("proj-0000"), Annotations: annotations(limit + limit/2)})
	if err != nil {
		t.Fatal(err)
	}
	id := big.GetMetadata().GetId()
	h.waitEvent(live, before, "reference event of the big session", func(e rawEvent) bool { return e.ev.GetObjectId() == id && e.omitted.Object })
	audits := func() float64 { return inf.metric("informer_kv_audits_total", `resource="sessions"`) }
	start := audits()
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := audits() - start; n < 3 {
			return fmt.Errorf("%v audits since the big session was published", n)
		}
		return nil
	})
	if got := inf.metric("informer_kv_repairs_total", `resource="sessions"`); got != 0 {
		t.Fatalf("the audit flagged %v entries: the oversize session's missing entry taken for a disagreement", got)
	}
}
