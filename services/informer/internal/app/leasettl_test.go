package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// shadowEnv is the environment of a shadow informer with LEASE_TTL ttl: its
// own stream, bucket and lease key, in the live one's leases bucket.
func shadowEnv(ttl string) map[string]string {
	return map[string]string{
		config.EnvSubjectPrefix: events.ShadowSubjectPrefix,
		config.EnvEventsStream:  events.ShadowStreamName,
		config.EnvLeaseTTL:      ttl,
	}
}

// leasesTTL is the leases bucket's TTL.
func (h *harness) leasesTTL() time.Duration {
	h.t.Helper()
	kv, err := h.js.KeyValue(context.Background(), bus.BucketLeases)
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := kv.Status(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return st.TTL()
}

// TestShadowLeaseTTLLeavesTheLiveLeaseAlone: a shadow informer shares the
// ambient-leases bucket, whose TTL is every lease's. One with a lower
// LEASE_TTL used to rewrite the bucket's TTL at its start, and the live
// leader, renewing every 2 s a lease the server now expired after 1 s,
// lost and retook it every few seconds. Now the bucket's TTL is never
// lowered: the shadow leads its own key by the bucket's TTL (with a
// warning). One with a higher LEASE_TTL raises the bucket's TTL, which is
// safe: the live leader's lease lives longer than the leader trusts it.
func TestShadowLeaseTTLLeavesTheLiveLeaseAlone(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(5, 1)
	liveInf := h.start("live", map[string]string{config.EnvLeaseTTL: "6s"})
	h.waitLeaderReady(liveInf, 30*time.Second)
	terms := liveInf.metric("informer_lease_terms_total")

	lower := h.start("shadow-lower", shadowEnv("1s"))
	h.waitLeaderReady(lower, 30*time.Second)
	if got := h.leasesTTL(); got != 6*time.Second {
		t.Errorf("leases bucket ttl %v after a shadow with LEASE_TTL 1s, want 6s (never lowered)", got)
	}
	if err := lower.stop(); err != nil {
		t.Fatalf("shadow-lower: %v", err)
	}

	higher := h.start("shadow-higher", shadowEnv("8s"))
	h.waitLeaderReady(higher, 30*time.Second)
	if got := h.leasesTTL(); got != 8*time.Second {
		t.Errorf("leases bucket ttl %v after a shadow with LEASE_TTL 8s, want 8s", got)
	}
	if got := liveInf.metric("informer_lease_terms_total"); got != terms || !liveInf.isLeader() {
		t.Errorf("live informer: %v terms (leader %v), want still the first (%v)", got, liveInf.isLeader(), terms)
	}
}
