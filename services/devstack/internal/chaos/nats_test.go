package chaos

import (
	"fmt"
	"testing"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/synadia-io/orbit.go/pcgroups"
)

// TestPartitionsOf: the harness reads which objects a member's partitions
// hold from the group's mapping in NATS, with the partition function the
// services use; a member without partitions holds none, and a group that
// does not exist is an error, not an empty answer.
func TestPartitionsOf(t *testing.T) {
	ctx := t.Context()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	if _, err := bus.EnsureEventsStream(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	const partitions = 16
	filter := []pcgroups.PartitioningFilter{{Filter: events.SubjectPrefix + ".*.*.*", PartitioningWildcards: []int{3}}}
	if _, err := pcgroups.CreateElastic(ctx, js, eventsStream, svcKubeReconciler, partitions, filter, 0, 0); err != nil {
		t.Fatal(err)
	}
	low, high := []int{0, 1, 2, 3, 4, 5, 6, 7}, []int{8, 9, 10, 11, 12, 13, 14, 15}
	if err := pcgroups.SetMemberMappings(ctx, js, eventsStream, svcKubeReconciler, []pcgroups.MemberMapping{
		{Member: "kube-reconciler-0", Partitions: low}, {Member: "kube-reconciler-1", Partitions: high},
	}); err != nil {
		t.Fatal(err)
	}
	v := &natsView{js: js}
	in0, err := v.partitionsOf(ctx, svcKubeReconciler, "kube-reconciler-0")
	if err != nil {
		t.Fatal(err)
	}
	inNobody, err := v.partitionsOf(ctx, svcKubeReconciler, "kube-reconciler-9")
	if err != nil {
		t.Fatal(err)
	}
	var held int
	for i := range 64 {
		id := fmt.Sprintf("session-%d", i)
		want := group.PartitionOf(id, partitions) < 8
		if in0(id) != want {
			t.Errorf("%s (partition %d): in kube-reconciler-0's partitions %t, want %t", id, group.PartitionOf(id, partitions), in0(id), want)
		}
		if want {
			held++
		}
		if inNobody(id) {
			t.Errorf("%s in the partitions of a member without any", id)
		}
	}
	if held == 0 || held == 64 {
		t.Fatalf("%d of 64 ids in half the partitions: the test cannot tell", held)
	}
	if _, err := v.partitionsOf(ctx, "no-such-group", "kube-reconciler-0"); err == nil {
		t.Error("partitionsOf of a missing group: no error")
	}
}
