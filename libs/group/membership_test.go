package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

func noop(context.Context, group.Message) error { return nil }

// TestGracefulStopLeavesAtOnce: a member that stops deletes its heartbeat
// key and writes the group's mapping without itself before Run returns,
// so its partitions go to the others at once. MemberTTL is 30 s, so a
// member that only stopped heartbeating would still hold its key and its
// partitions long after these checks (and a peer would not count it dead
// before it had itself been up for a TTL).
func TestGracefulStopLeavesAtOnce(t *testing.T) {
	t.Parallel()
	js, a := startAB(t, func(c *group.Config) { c.MemberTTL = 30 * time.Second })
	if err := a.stop(t); err != nil {
		t.Fatalf("Run after stop = %v, want nil", err)
	}
	// Left by the time Run returned: no waiting.
	members, err := js.KeyValue(t.Context(), group.MembersBucketName(events.StreamName, testGroup))
	if err != nil {
		t.Fatalf("members bucket: %v", err)
	}
	if _, err := members.Get(t.Context(), "a"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a's heartbeat key after its stop: %v, want it deleted", err)
	}
	c, err := pcgroups.GetElasticConsumerGroupConfig(t.Context(), js, events.StreamName, testGroup)
	if err != nil {
		t.Fatalf("group config: %v", err)
	}
	if len(c.MemberMappings) != 1 || c.MemberMappings[0].Member != "b" || len(c.MemberMappings[0].Partitions) != 8 {
		t.Fatalf("mapping after a's stop = %v, want b alone with all 8 partitions", c.MemberMappings)
	}
	waitMembers(t, js, "b")
}

// TestDeadMembersConsumerDeleted: when a member dies without leaving (its
// connection closes), a survivor's reconcile deletes the dead member's
// JetStream consumer once its heartbeat expired: the work-queue stream
// refuses the survivor an overlapping consumer while it exists. AckWait
// is 30 s, so pcgroups' idle timeout (one AckWait) is not what removes it
// within the wait here.
func TestDeadMembersConsumerDeleted(t *testing.T) {
	t.Parallel()
	js, a := startAB(t, func(c *group.Config) { c.AckWait = 30 * time.Second })
	a.nc.Close() // abrupt: no leave, the heartbeat key expires after MemberTTL
	work := group.WorkStreamName(events.StreamName, testGroup)
	testenv.Eventually(t, 15*time.Second, func() error {
		_, err := js.Consumer(t.Context(), work, "a")
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil
		}
		return fmt.Errorf("dead member's consumer still there (%v)", err)
	})
	waitMembers(t, js, "b")
}

// startAB starts members a and b, with testConfig changed by tweak and
// handlers that do nothing, and returns once both hold partitions.
func startAB(t *testing.T, tweak func(*group.Config)) (jetstream.JetStream, *member) {
	t.Helper()
	srv, js := setup(t)
	cfg := func(name string) group.Config {
		c := testConfig(name)
		tweak(&c)
		return c
	}
	a := startMember(t, srv, cfg("a"), noop)
	startMember(t, srv, cfg("b"), noop)
	waitMembers(t, js, "a", "b")
	return js, a
}
