package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestStreamLeaderServerLost: with STREAM_REPLICAS=3 on a real 3-node
// JetStream cluster, the server leading the events stream is shut down (as
// a rolling update of NATS does; an embedded server cannot be killed
// without its shutdown), and the API changes while its streams and buckets
// elect new leaders. Every change still reaches the stream exactly once and
// the objects bucket ends equal to the API: the publish and KV-write
// retries cover a leader election, not only a whole-server restart (the
// single-server outage tests).
func TestStreamLeaderServerLost(t *testing.T) {
	t.Parallel()
	c := testenv.NewNATSCluster(t, 3)
	url := c.StartAll()
	h := newHarness(t)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(25*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	if h.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	h.seed(30, 2)
	a := h.start("a", map[string]string{bus.EnvNATSURL: url, config.EnvStreamReplicas: "3"})
	h.waitLeaderReady(a, time.Minute)
	before := len(h.waitConverged(live, bucket, time.Minute))

	if s, err := h.js.Stream(t.Context(), live); err != nil || s.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("events stream: %v; want 3 replicas", err)
	}
	t.Logf("shut down %s, the events stream's leader", c.ShutdownStreamLeader(h.js, live))

	ids := h.sessionIDs()
	for i := range 10 {
		h.createSession(fmt.Sprintf("after-leader-lost-%d", i))
	}
	for i := range 5 {
		h.updateSession(ids[i], "changed while a leader was elected")
	}
	h.deleteSession(ids[10])
	h.deleteSession(ids[11])
	evs := h.waitConverged(live, bucket, time.Minute)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 10, "sessions/MODIFIED": 5, "sessions/DELETED": 2})
}
