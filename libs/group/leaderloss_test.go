package group_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestStreamLeaderServerLost: on a real 3-node cluster with every stream
// at R3, the server leading the group's work stream is shut down (as a
// rolling update of NATS does) while events flow. The group goes on
// through the stream's leader election and its member's reconnect: every
// object's versions are handled in order up to the last, nothing is
// dead-lettered. (Single-server tests restart the only server; here the
// data stays up and only its leader moves.)
func TestStreamLeaderServerLost(t *testing.T) {
	t.Parallel()
	cluster, url := startCluster(t, 3)
	_, js := clusterJetStream(t, url)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 3, 0); err != nil {
		t.Fatalf("events stream: %v", err)
	}
	var j journal
	cfg := testConfig("a")
	nc, mjs := clusterJetStream(t, url)
	runMember(t, nc, mjs, cfg, func(_ context.Context, m group.Message) error {
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	}, testLogger())
	waitMembers(t, js, "a")

	objects := []string{"s1", "s2", "s3", "s4"}
	const versions = 30
	// Published with retries: while the events stream's own leader is
	// being elected a publish may time out, and the informer retries too.
	publishAt := func(id string, v int) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err := js.PublishMsg(ctx, eventMsg(t, ctx, id, v))
			return err
		})
	}
	var wg sync.WaitGroup
	publishRange := func(from, to int) {
		for _, id := range objects {
			wg.Go(func() {
				for v := from; v <= to; v++ {
					publishAt(id, v)
				}
			})
		}
		wg.Wait()
	}
	publishRange(1, versions/2)

	leader := cluster.ShutdownStreamLeader(js, group.WorkStreamName(events.StreamName, testGroup))
	t.Logf("shut down %s, the work stream's leader", leader)

	publishRange(versions/2+1, versions)
	testenv.Eventually(t, time.Minute, func() error {
		seen := checkOrder(t, j.snapshot())
		for _, id := range objects {
			if vs := seen[id]; len(vs) == 0 || vs[len(vs)-1] != versions {
				return fmt.Errorf("object %s: handled %v, want up to v%d", id, vs, versions)
			}
		}
		return nil
	})
	seen := checkOrder(t, j.snapshot())
	for _, id := range objects {
		// At least once: every version reached the handler.
		for v := 1; v <= versions; v++ {
			if !slices.Contains(seen[id], v) {
				t.Errorf("object %s: v%d never handled (handled %v)", id, v, seen[id])
			}
		}
	}
	if n := len(dlqMessages(t, js)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}
