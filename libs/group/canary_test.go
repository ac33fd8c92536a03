package group_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestCanaryGetsExactlyItsSlice: a canary pinned to partitions {1,6} gets
// exactly the objects hashing there, the stable members share the rest,
// no event is handled twice; when the canary leaves, its partitions go
// back to the stable members.
func TestCanaryGetsExactlyItsSlice(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	record := func(name string) group.Handler {
		return func(_ context.Context, m group.Message) error {
			j.add(call{member: name, object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
			return nil
		}
	}
	canaryCfg := testConfig("canary")
	canaryCfg.MemberPartitions = []int{6, 1}
	canary := startMember(t, srv, canaryCfg, record("canary"))
	startMember(t, srv, testConfig("stable-0"), record("stable-0"))
	startMember(t, srv, testConfig("stable-1"), record("stable-1"))
	mapping := waitMembers(t, js, "canary", "stable-0", "stable-1")
	if got := partitionsIn(mapping, "canary"); !slices.Equal(got, []int{1, 6}) {
		t.Fatalf("canary partitions = %v, want [1 6]", got)
	}

	const objects = 40
	for o := range objects {
		publish(t, js, fmt.Sprintf("sess-%02d", o), 1)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := j.successes(); n < objects {
			return fmt.Errorf("%d of %d handled", n, objects)
		}
		return nil
	})
	canaryObjects := 0
	handled := map[string]int{}
	for _, c := range j.snapshot() {
		handled[c.object]++
		p := group.PartitionOf(c.object, 8)
		wantCanary := p == 1 || p == 6
		if (c.member == "canary") != wantCanary {
			t.Errorf("object %s (partition %d) handled by %s", c.object, p, c.member)
		}
		if c.member == "canary" {
			canaryObjects++
		}
	}
	for o, n := range handled {
		if n != 1 {
			t.Errorf("object %s handled %d times", o, n)
		}
	}
	if canaryObjects == 0 {
		t.Fatalf("canary got nothing; the test ids never hash to partitions 1 or 6")
	}

	// Removing the canary hands its partitions back.
	if err := canary.stop(t); err != nil {
		t.Fatalf("canary stop: %v", err)
	}
	waitMembers(t, js, "stable-0", "stable-1")
	before := len(j.snapshot())
	for o := range objects {
		publish(t, js, fmt.Sprintf("sess-%02d", o), 2)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := j.successes(); n < 2*objects {
			return fmt.Errorf("%d of %d handled", n, 2*objects)
		}
		return nil
	})
	for _, c := range j.snapshot()[before:] {
		if c.member == "canary" {
			t.Errorf("canary handled %s after leaving", c.object)
		}
	}
}
