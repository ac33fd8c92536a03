package app

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

const getSessionMethod = "/ambient.v1.SessionService/GetSession"

// TestStatusWrittenByPartitionOwner (issue 15: replicas share the work):
// every replica watches every AgenticSession, but only the replica that
// owns a session's partition carries its CR status to the API, so two
// replicas write each change once and read the API once for it, instead of
// each checking (and racing to write) every change. When a partition
// moves, its new owner writes what changed while nobody owned it, without
// waiting for a CR event or the periodic status resync.
func TestStatusWrittenByPartitionOwner(t *testing.T) {
	h := newHarness(t)
	// Pinned halves, so which replica owns a session is known; c shares
	// whatever is left (nothing while a and b live).
	a := h.start(t, "so-a", nil, map[string]string{group.EnvMemberPartitions: "0,1"})
	b := h.start(t, "so-b", nil, map[string]string{group.EnvMemberPartitions: "2,3"})
	c := h.start(t, "so-c", nil, nil)
	ctx := t.Context()
	name := unique("own")
	pid := h.project(t, name).GetMetadata().GetId()
	const partitions = 4 // the harness's GROUP_PARTITIONS
	owner := map[string]*replica{}
	ofB := 0
	for i := 0; len(owner) < 8 || ofB < 3 || len(owner)-ofB < 3; i++ {
		s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: strconv.Itoa(i), ProjectId: ptr(pid)})
		if err != nil {
			t.Fatal(err)
		}
		id := s.GetMetadata().GetId()
		owner[id] = a
		if group.PartitionOf(id, partitions) >= 2 {
			owner[id], ofB = b, ofB+1
		}
	}
	ids := slices.Sorted(maps.Keys(owner))
	names := map[*replica]string{a: "a", b: "b", c: "c"}
	// writtenBy checks the "session status written" records after mark:
	// each by the session's owner; it returns how many each replica wrote.
	writtenBy := func(mark map[*replica]int) map[*replica]int {
		t.Helper()
		out := map[*replica]int{}
		for _, r := range []*replica{a, b, c} {
			for _, rec := range r.logs.Lines(t, "session status written", nil)[mark[r]:] {
				id, _ := rec[logkey.SessionID].(string)
				if owner[id] != r {
					t.Errorf("replica %s wrote the status of session %s (partition %d), owned by %s", names[r], id, group.PartitionOf(id, partitions), names[owner[id]])
				}
				out[r]++
			}
		}
		return out
	}
	// ownReads: this test's own GetSession calls, kept apart from the replicas'.
	ownReads := h.waitSessions(t, ids, "kube_namespace", func(s *ambientv1.Session) bool { return s.GetKubeNamespace() == name })
	h.quiesce(t, a, b, c)

	// The operator moves every CR to Running: one write and one read each.
	writes0, reads0 := h.api.CallCount(updateStatusMethod), h.api.CallCount(getSessionMethod)-ownReads
	mark := writtenBy(nil)
	setPhase := func(among []string, phase string) {
		t.Helper()
		for _, id := range among {
			h.setCRStatus(t, name, lower(id), map[string]any{"phase": phase})
		}
	}
	setPhase(ids, "Running")
	ownReads += h.waitSessions(t, ids, "phase Running", func(s *ambientv1.Session) bool { return s.GetPhase() == "Running" })
	h.quiesce(t, a, b, c)
	if got := h.api.CallCount(updateStatusMethod) - writes0; got != len(ids) {
		t.Errorf("UpdateSessionStatus calls for %d phase changes = %d, want one each", len(ids), got)
	}
	if got := h.api.CallCount(getSessionMethod) - ownReads - reads0; got > len(ids) {
		t.Errorf("GetSession calls for %d phase changes = %d, want at most one each (the owner's check)", len(ids), got)
	}
	if w := writtenBy(mark); w[a] == 0 || w[b] == 0 || w[c] != 0 {
		t.Errorf("status writes by replica: a %d, b %d, c %d; want a and b only", w[a], w[b], w[c])
	}

	// b dies. Its sessions change while their partitions are still mapped
	// to it (until a MEMBER_TTL passes); c sees those CR events but does not
	// own them yet. Once the partitions move to c, c writes them.
	var ofDead []string
	for _, id := range ids {
		if owner[id] == b {
			ofDead = append(ofDead, id)
		}
	}
	mark = writtenBy(nil)
	b.crash()
	setPhase(ofDead, "Completed")
	testenv.Eventually(t, wait, func() error {
		if n := len(c.logs.Lines(t, "status left to the partition owner", map[string]string{"phase": "Completed"})); n < len(ofDead) {
			return fmt.Errorf("replica c looked at %d of %d changed CRs it does not own", n, len(ofDead))
		}
		return nil
	})
	for _, id := range ofDead {
		owner[id] = c
	}
	// Well within the harness's 1-minute status resync.
	h.waitSessions(t, ofDead, "phase Completed", func(s *ambientv1.Session) bool { return s.GetPhase() == "Completed" })
	if w := writtenBy(mark); w[c] != len(ofDead) {
		t.Errorf("replica c wrote %d statuses after it took b's partitions, want %d (b's sessions)", w[c], len(ofDead))
	}
}

// TestStatusOnlyOfThisInstallation (a second tenant): two installations,
// each with its own ambient API, share one cluster. Each carries the status
// of its own AgenticSessions only; the other's CRs cost it no API call
// (they used to cost a GetSession per change, answered NotFound).
func TestStatusOnlyOfThisInstallation(t *testing.T) {
	one, two := newHarness(t), newHarness(t)
	ra := one.start(t, "inst-1", nil, nil)
	rb := two.start(t, "inst-2", nil, nil)
	polls := map[*harness]int{} // GetSession calls of this test, by API
	created := func(h *harness, prefix string, n int) (string, []string) {
		t.Helper()
		name := unique(prefix)
		ids := h.createSessions(t, h.project(t, name).GetMetadata().GetId(), n)
		polls[h] += h.waitSessions(t, ids, "kube_namespace", func(s *ambientv1.Session) bool { return s.GetKubeNamespace() == name })
		return name, ids
	}
	// Installation one's sessions, CRs and status changes first; then one
	// session of installation two, whose status is written after two's CR
	// watch delivered one's CRs (it is one watch, in resource-version order).
	const n = 10
	oneNS, oneIDs := created(one, "ten-one", n)
	for _, id := range oneIDs {
		one.setCRStatus(t, oneNS, lower(id), map[string]any{"phase": "Running"})
	}
	one.waitSessions(t, oneIDs, "phase Running", func(s *ambientv1.Session) bool { return s.GetPhase() == "Running" })
	_, twoIDs := created(two, "ten-two", 1)
	one.quiesce(t, ra)
	two.quiesce(t, rb)
	if got := two.api.CallCount(updateStatusMethod); got != len(twoIDs) {
		t.Errorf("installation two's API took %d status writes, want %d (its own session's)", got, len(twoIDs))
	}
	// Its one write (kube_cr_uid and kube_namespace of a new CR) leaves
	// the phase alone and needs no read of the session (withoutRead).
	if got := two.api.CallCount(getSessionMethod) - polls[two]; got != 0 {
		t.Errorf("installation two's replica called GetSession %d times, want 0 (other installations' CRs cost nothing, its own new CR's first write no read)", got)
	}
	if got := one.api.CallCount(updateStatusMethod); got != 2*n {
		t.Errorf("installation one's API took %d status writes, want %d (kube_cr_uid, then Running, per session)", got, 2*n)
	}
}
