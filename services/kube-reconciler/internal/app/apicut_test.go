package app

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestAPICutReplicaHandsOverStatuses: a replica cut off from the API alone
// (NATS and Kubernetes fine) kept its partitions, so the CR statuses of
// its sessions waited for the API's return. Now, once its client has
// failed to connect for GROUP_NOT_READY_AFTER, its partitions go to the
// peer, whose status write-back carries them while the cut lasts.
func TestAPICutReplicaHandsOverStatuses(t *testing.T) {
	h := newHarness(t)
	link := testenv.NewLink(t, h.api.GRPCAddr())
	// Sharing in name order, of the harness's 4 partitions: a gets 0 and 1.
	a := h.start(t, "apicut-a", nil, map[string]string{apiclient.EnvGRPCAddr: link.Addr(), group.EnvNotReadyAfter: "2s"})
	b := h.start(t, "apicut-b", nil, map[string]string{group.EnvNotReadyAfter: "2s"})
	ctx := t.Context()
	name := unique("apicut")
	pid := h.project(t, name).GetMetadata().GetId()
	var s *ambientv1.Session
	for i := 0; s == nil || group.PartitionOf(s.GetMetadata().GetId(), 4) >= 2; i++ {
		var err error
		if s, err = h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: strconv.Itoa(i), ProjectId: ptr(pid)}); err != nil {
			t.Fatal(err)
		}
	}
	id, crName := s.GetMetadata().GetId(), lower(s.GetKubeCrName())
	h.waitCR(t, name, crName, nil)
	h.quiesce(t, a, b)
	testenv.Eventually(t, wait, func() error {
		if n := a.stats.Snapshot().Partitions; n != 2 {
			return fmt.Errorf("apicut-a owns %d partitions, want 2", n)
		}
		return nil
	})

	link.Cut()
	cut := time.Now()
	h.setCRStatus(t, name, crName, map[string]any{"phase": "Running"})
	// The API stays cut off from a: well before its return or the 1-minute
	// status resync, b carries the status.
	testenv.Eventually(t, 20*time.Second, func() error {
		got, err := h.cl.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if got.GetPhase() != "Running" {
			return fmt.Errorf("phase %q %s after the cut", got.GetPhase(), time.Since(cut).Round(100*time.Millisecond))
		}
		return nil
	})
	t.Logf("status written %s after apicut-a was cut off from the API", time.Since(cut).Round(100*time.Millisecond))
	if n := a.stats.Snapshot().Partitions; n != 0 {
		t.Errorf("apicut-a owns %d partitions while cut off from the API, want 0", n)
	}
}
