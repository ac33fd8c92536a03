package group_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestAssignmentFollowsMembership: each member's Assignment holds exactly
// its partitions in the group's mapping: two members own disjoint sets that
// cover every partition, OwnsObject agrees with PartitionOf, the survivor
// owns everything once the other leaves, and a stopped member owns nothing.
func TestAssignmentFollowsMembership(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	noop := func(context.Context, group.Message) error { return nil }
	cfgA, cfgB := testConfig("a"), testConfig("b")
	cfgA.Assignment, cfgB.Assignment = &group.Assignment{}, &group.Assignment{}
	if got := cfgA.Assignment.Owned(); got != nil {
		t.Fatalf("owned before joining = %v", got)
	}
	startMember(t, srv, cfgA, noop)
	b := startMember(t, srv, cfgB, noop)
	mapping := waitMembers(t, js, "a", "b")
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, c := range []struct {
			name string
			as   *group.Assignment
		}{{"a", cfgA.Assignment}, {"b", cfgB.Assignment}} {
			if got, want := c.as.Owned(), partitionsIn(mapping, c.name); !slices.Equal(got, want) {
				return fmt.Errorf("%s owns %v, mapping says %v", c.name, got, want)
			}
		}
		return nil
	})
	all := append(cfgA.Assignment.Owned(), cfgB.Assignment.Owned()...)
	slices.Sort(all)
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(all, want) {
		t.Fatalf("a and b own %v together, want every partition once", all)
	}
	for i := range 50 {
		id := fmt.Sprintf("s%d", i)
		if cfgA.Assignment.OwnsObject(id) == cfgB.Assignment.OwnsObject(id) {
			t.Errorf("object %s (partition %d) owned by both or neither", id, group.PartitionOf(id, 8))
		}
	}

	if err := b.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := cfgB.Assignment.Owned(); got != nil {
		t.Errorf("stopped member still owns %v", got)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := cfgA.Assignment.Owned(); len(got) != 8 {
			return fmt.Errorf("survivor owns %v", got)
		}
		return nil
	})
}

// TestReplayOnlyForItsGroup: an event carrying HeaderReplayGroup reaches
// the handler of that group only; another group's member acks it unhandled.
func TestReplayOnlyForItsGroup(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var (
		mu   sync.Mutex
		seen = map[string][]string{} // group -> object ids handled
	)
	handler := func(name string) group.Handler {
		return func(_ context.Context, m group.Message) error {
			mu.Lock()
			defer mu.Unlock()
			seen[name] = append(seen[name], m.Event.GetObjectId())
			return nil
		}
	}
	cfgOther := testConfig("o")
	cfgOther.Group = "other"
	other := cfgOther.Stats
	startMember(t, srv, testConfig("a"), handler(testGroup))
	startMember(t, srv, cfgOther, handler("other"))
	waitMembers(t, js, "a")

	publish(t, js, "plain", 1)
	msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "replayed", UpdatedAt: timestamppb.Now()}, Name: "1", ProjectId: proto.String("p1")}, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	replay := nats.NewMsg(msg.Subject)
	replay.Data, replay.Header = msg.Data, msg.Header
	replay.Header.Set(group.HeaderReplayGroup, testGroup)
	replay.Header.Set("Nats-Msg-Id", "replay-1")
	if _, err := js.PublishMsg(t.Context(), replay); err != nil {
		t.Fatal(err)
	}
	publish(t, js, "after", 1)
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen[testGroup]) != 3 || len(seen["other"]) != 2 {
			return fmt.Errorf("handled %v", seen)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(seen[testGroup], "replayed") || slices.Contains(seen["other"], "replayed") {
		t.Errorf("replay handled by %v, want only %s", seen, testGroup)
	}
	if got := other.Snapshot().Delivered; got != 3 {
		t.Errorf("other group got %d deliveries, want 3 (the replay acked unhandled)", got)
	}
}
