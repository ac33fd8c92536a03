package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestTwoMembersShareAndKeepOrder: two members split the objects; every
// event succeeds exactly once (failed first tries are retried and counted
// apart), and each object's versions are handled in order even through a
// retry.
func TestTwoMembersShareAndKeepOrder(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	handler := func(name string) group.Handler {
		return func(_ context.Context, m group.Message) error {
			v, id := version(m), m.Event.GetObjectId()
			// Version 3 of every other object fails on its first try.
			fail := v == 3 && m.Attempt == 1 && id[len(id)-1]%2 == 0
			j.add(call{member: name, object: id, version: v, attempt: m.Attempt, ok: !fail})
			if fail {
				return errors.New("transient")
			}
			return nil
		}
	}
	ca, cb := testConfig("a"), testConfig("b")
	// No member leaves here, so a late heartbeat on a loaded machine must
	// not count as a death that moves partitions (the failover tests cover
	// that with the short TTL).
	ca.MemberTTL, cb.MemberTTL = 10*time.Second, 10*time.Second
	startMember(t, srv, ca, handler("a"))
	startMember(t, srv, cb, handler("b"))
	waitMembers(t, js, "a", "b")

	const objects, versions = 20, 5
	for v := 1; v <= versions; v++ {
		for o := range objects {
			publish(t, js, fmt.Sprintf("obj-%02d", o), v)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := j.successes(); n < objects*versions {
			return fmt.Errorf("%d of %d events handled", n, objects*versions)
		}
		if n := ca.Stats.Snapshot().Acked + cb.Stats.Snapshot().Acked; n < objects*versions {
			return fmt.Errorf("%d of %d events acked", n, objects*versions)
		}
		return nil
	})

	calls := j.snapshot()
	seen := checkOrder(t, calls)
	owner := map[string]string{}
	perMember := map[string]int{}
	for _, c := range calls {
		if prev, ok := owner[c.object]; ok && prev != c.member {
			t.Errorf("object %s handled by %s and %s", c.object, prev, c.member)
		}
		owner[c.object] = c.member
		if c.ok {
			perMember[c.member]++
		}
	}
	for o, vs := range seen {
		if len(vs) != versions {
			t.Errorf("object %s: versions %v, want each of 1..%d once", o, vs, versions)
		}
	}
	if perMember["a"] == 0 || perMember["b"] == 0 {
		t.Errorf("members did not share: %v", perMember)
	}
	sa, sb := ca.Stats.Snapshot(), cb.Stats.Snapshot()
	if got := sa.Retried + sb.Retried; got != objects/2 {
		t.Errorf("retried = %d, want %d", got, objects/2)
	}
	if got := sa.Acked + sb.Acked; got != objects*versions {
		t.Errorf("acked = %d, want %d", got, objects*versions)
	}
	if sa.DeadLettered+sb.DeadLettered != 0 {
		t.Errorf("dead letters: %+v %+v", sa, sb)
	}
}
