package app_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestAPICutReplicaHandsOverItsPartitions: one replica alone cut off from
// the API (NATS still fine) kept its partitions before, so a session
// created in them waited for a peer's resync (1 minute) or the API's
// return. Now, once its API client has failed to connect for
// GROUP_NOT_READY_AFTER, its partitions go to the peer, which runs such a
// session within seconds; its own runner stays where it is, and it takes
// its partitions back once the API is reachable again.
//
// The resync is off on both replicas, so the session's event, handled by
// the peer once the partition is its, is the only way the session can
// start while the API is cut: without the hand-over it stays Pending, and
// the waits below are hang guards, not bounds on how fast it moves.
func TestAPICutReplicaHandsOverItsPartitions(t *testing.T) {
	w := newWorld(t)
	link := testenv.NewLink(t, w.api.GRPCAddr())
	const notReadyAfter, noResync = "GROUP_NOT_READY_AFTER=2s", "RUNNER_RESYNC_INTERVAL=0"
	w.start("rm-a", 20, notReadyAfter, noResync, "AMBIENT_GRPC_SERVER_ADDR="+link.Addr())
	w.start("rm-b", 20, notReadyAfter, noResync)
	var aParts []int
	testenv.Eventually(t, 10*time.Second, func() error {
		owners, err := w.partitionOwners()
		if err != nil {
			return err
		}
		if aParts = owners["rm-a"]; len(aParts) == 0 || len(owners["rm-b"]) == 0 {
			return fmt.Errorf("partitions %v, want both replicas to own some", owners)
		}
		return nil
	})
	// A runner of rm-a's, started before the cut.
	kept := w.createIn(aParts, "kept")
	w.waitAll([]string{kept}, "Running", 30*time.Second)
	before, err := w.record(kept)
	if err != nil {
		t.Fatal(err)
	}
	if before.Owner != "rm-a" {
		t.Fatalf("session %s of rm-a's partitions %v runs on %s", kept, aParts, before.Owner)
	}

	link.Cut()
	cut := time.Now()
	// The hand-over takes GROUP_NOT_READY_AFTER and a heartbeat or two;
	// the times are only logged, the waits are hang guards (a loaded
	// machine may take far longer; without the hand-over nothing moves).
	testenv.Eventually(t, 60*time.Second, func() error {
		owners, err := w.partitionOwners()
		if err != nil {
			return err
		}
		if ps := owners["rm-a"]; len(ps) > 0 {
			return fmt.Errorf("rm-a still owns partitions %v after the cut", ps)
		}
		return nil
	})
	t.Logf("rm-a's partitions moved %s after the cut", time.Since(cut).Round(100*time.Millisecond))
	created := time.Now()
	id := w.createIn(aParts, "cut")
	w.waitAll([]string{id}, "Running", 60*time.Second)
	t.Logf("session of rm-a's partitions Running %s after its creation", time.Since(created).Round(100*time.Millisecond))
	if rec, err := w.record(id); err != nil || rec.Owner != "rm-b" {
		t.Errorf("session %s: record %+v (%v), want it run by rm-b", id, rec, err)
	}

	link.Restore()
	testenv.Eventually(t, 20*time.Second, func() error {
		owners, err := w.partitionOwners()
		if err != nil {
			return err
		}
		if !slices.Equal(owners["rm-a"], aParts) {
			return fmt.Errorf("rm-a owns %v after the API's return, want its %v back", owners["rm-a"], aParts)
		}
		return nil
	})
	after, err := w.record(kept)
	if err != nil {
		t.Fatal(err)
	}
	if after.Owner != before.Owner || after.PID != before.PID {
		t.Errorf("session %s moved: %s pid %d -> %s pid %d; a replica's runners stay while its partitions move", kept, before.Owner, before.PID, after.Owner, after.PID)
	}
	w.waitAll([]string{kept, id}, "Running", 10*time.Second)
}

// partitionOwners reads, from runner-manager's consumer-group config
// (pcgroups' bucket), the partitions each member owns now.
func (w *world) partitionOwners() (map[string][]int, error) {
	kv, err := w.js.KeyValue(w.t.Context(), "elastic-consumer-groups")
	if err != nil {
		return nil, fmt.Errorf("group config bucket: %w", err)
	}
	e, err := kv.Get(w.t.Context(), events.StreamName+".runner-manager")
	if err != nil {
		return nil, fmt.Errorf("group config: %w", err)
	}
	var cfg struct {
		MemberMappings []struct {
			Member     string `json:"member"`
			Partitions []int  `json:"partitions"`
		} `json:"member_mappings"`
	}
	if err := json.Unmarshal(e.Value(), &cfg); err != nil {
		return nil, fmt.Errorf("decode group config: %w", err)
	}
	out := map[string][]int{}
	for _, mm := range cfg.MemberMappings {
		out[mm.Member] = mm.Partitions
	}
	return out, nil
}

// createIn creates sessions named prefix00, prefix01, ... until one's id
// falls in one of parts (of the default 16) and returns that one's id; the
// others run wherever their partition goes.
func (w *world) createIn(parts []int, prefix string) string {
	w.t.Helper()
	for i := range 32 {
		id := w.create(fmt.Sprintf("%s%02d", prefix, i))
		if slices.Contains(parts, group.PartitionOf(id, group.DefaultPartitions)) {
			return id
		}
	}
	w.t.Fatalf("32 sessions, none in partitions %v", parts)
	return ""
}
