package canary_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/tally"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

const (
	groupName  = "event-tally"
	partitions = 16
	// perResource objects of each of sessions and projects.
	perResource = 24
	// versionsBoth events per object are published while stable and canary
	// both run, versionsAfter more once the canary is gone.
	versionsBoth  = 4
	versionsAfter = 2
)

// object is one API object the test publishes events for.
type object struct {
	res eventsv1.Resource
	id  string
}

// TestCanaryMemberOwnsItsSliceAndHandsItBack runs a stable event-tally and
// a canary pinned to partitions {3,11} of 16 (1/8 of the objects) in one
// consumer group, as a canary Deployment next to the stable one would:
//
//   - while both run, the canary counts exactly the objects whose id hashes
//     to its partitions (group.PartitionOf), the stable member exactly the
//     others, no event is counted twice, and every event of an object lands
//     on the same member (an object never flips between versions);
//   - after the canary gets SIGTERM and exits cleanly, the stable member
//     owns all partitions and counts every later event, including those of
//     the canary's former objects.
func TestCanaryMemberOwnsItsSliceAndHandsItBack(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	if _, err := bus.EnsureEventsStream(t.Context(), js, 1, time.Hour); err != nil {
		t.Fatal(err)
	}

	canaryParts := []int{3, 11}
	var all, stableParts []int
	for p := range partitions {
		all = append(all, p)
		if !slices.Contains(canaryParts, p) {
			stableParts = append(stableParts, p)
		}
	}
	var objs, canaryObjs, stableObjs []object
	for _, res := range []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS, eventsv1.Resource_RESOURCE_PROJECTS} {
		for i := range perResource {
			o := object{res: res, id: fmt.Sprintf("%s-%02d", events.ResourceToken(res), i)}
			objs = append(objs, o)
			if slices.Contains(canaryParts, group.PartitionOf(o.id, partitions)) {
				canaryObjs = append(canaryObjs, o)
			} else {
				stableObjs = append(stableObjs, o)
			}
		}
	}
	// The ids are fixed, so this only guards a change of them or of the hash.
	if len(canaryObjs) == 0 || len(stableObjs) == 0 {
		t.Fatalf("test ids give canary %d and stable %d objects; pick others", len(canaryObjs), len(stableObjs))
	}
	t.Logf("%d objects: %d in canary partitions %v", len(objs), len(canaryObjs), canaryParts)

	// Roll-out order: the stable member runs alone, then the canary joins.
	stable := startMember(t, srv.ClientURL(), "event-tally-stable-0", "")
	waitConsumers(t, js, map[string][]int{stable.name: all})
	joinStart := time.Now()
	canary := startMember(t, srv.ClientURL(), "event-tally-canary-0", joinPartitions(canaryParts))
	waitConsumers(t, js, map[string][]int{stable.name: stableParts, canary.name: canaryParts})
	t.Logf("canary joined and the stable member gave up its slice in %s", time.Since(joinStart).Round(time.Millisecond))

	// Versions are interleaved across objects, so both members are busy at
	// once and each object's events arrive spread over the whole phase.
	pubStart := time.Now()
	for v := 1; v <= versionsBoth; v++ {
		for _, o := range objs {
			publish(t, js, o, v)
		}
	}
	got := waitCounted(t, js, len(objs)*versionsBoth, stable, canary)
	t.Logf("%d events counted by both members in %s", len(objs)*versionsBoth, time.Since(pubStart).Round(time.Millisecond))
	checkTally(t, canary.name, got[1], canaryObjs, versionsBoth, nil, 0)
	checkTally(t, stable.name, got[0], stableObjs, versionsBoth, nil, 0)
	stableBefore := got[0]

	// Removing the canary hands its partitions back at once (graceful leave).
	leaveStart := time.Now()
	if err := canary.stop(); err != nil {
		t.Fatalf("canary stop: %v", err)
	}
	waitConsumers(t, js, map[string][]int{stable.name: all})
	t.Logf("canary left and the stable member took all partitions in %s", time.Since(leaveStart).Round(time.Millisecond))

	for v := versionsBoth + 1; v <= versionsBoth+versionsAfter; v++ {
		for _, o := range objs {
			publish(t, js, o, v)
		}
	}
	got = waitCounted(t, js, stableBefore.Events+len(objs)*versionsAfter, stable)
	checkTally(t, stable.name+" after the canary left", got[0], stableObjs, versionsBoth, objs, versionsAfter)
}

// joinPartitions formats parts as GROUP_MEMBER_PARTITIONS ("3,11").
func joinPartitions(parts []int) string {
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// publish publishes event number v (1: ADDED, later: MODIFIED) of o to the
// events stream, as the informer does.
func publish(t *testing.T, js jetstream.JetStream, o object, v int) {
	t.Helper()
	// updated_at makes each version distinct, so no Nats-Msg-Id repeats.
	meta := &ambientv1.ObjectReference{Id: o.id, UpdatedAt: timestamppb.New(time.Unix(1_700_000_000+int64(v), 0))}
	typ := eventsv1.EventType_EVENT_TYPE_MODIFIED
	if v == 1 {
		typ = eventsv1.EventType_EVENT_TYPE_ADDED
	}
	var ev *eventsv1.ResourceEvent
	switch o.res {
	case eventsv1.Resource_RESOURCE_SESSIONS:
		ev = events.NewEvent(typ, &ambientv1.Session{Metadata: meta, Name: o.id}, nil, time.Now())
	case eventsv1.Resource_RESOURCE_PROJECTS:
		ev = events.NewEvent(typ, &ambientv1.Project{Metadata: meta, Name: o.id}, nil, time.Now())
	default:
		t.Fatalf("no constructor for resource %v", o.res)
	}
	msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, ev)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(t.Context(), msg)
	if err != nil {
		t.Fatalf("publish %s: %v", ev.GetEventId(), err)
	}
	if ack.Duplicate {
		t.Fatalf("publish %s: duplicate", ev.GetEventId())
	}
}

// waitConsumers waits until the group's JetStream consumers are exactly
// want's members, each filtered on exactly its partitions. The consumers,
// not the group config, decide who gets a message: a member whose consumer
// still has its old filters would take messages of partitions it gave up.
func waitConsumers(t *testing.T, js jetstream.JetStream, want map[string][]int) {
	t.Helper()
	ws := group.WorkStreamName(events.StreamName, groupName)
	// A join usually settles in under a second. When the canary's consumer
	// create races the stable member's consumer update (the server refuses
	// overlapping filters), the canary waits for the group watchdog or a
	// pcgroups retry: measured 10.1 s with event-tally's default AckWait
	// (10 s) and MemberTTL (5 s), see docs/consumer-groups.md.
	testenv.Eventually(t, 25*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, ws)
		if err != nil {
			return fmt.Errorf("work stream %s: %w", ws, err)
		}
		lister := s.ConsumerNames(ctx)
		var names []string
		for n := range lister.Name() {
			names = append(names, n)
		}
		if err := lister.Err(); err != nil {
			return fmt.Errorf("list consumers: %w", err)
		}
		for _, n := range names {
			if _, ok := want[n]; !ok {
				return fmt.Errorf("unexpected consumer %s", n)
			}
		}
		for name, parts := range want {
			c, err := s.Consumer(ctx, name)
			if err != nil {
				return fmt.Errorf("consumer %s: %w", name, err)
			}
			got, err := filterPartitions(c.CachedInfo().Config.FilterSubjects)
			if err != nil {
				return fmt.Errorf("consumer %s: %w", name, err)
			}
			if !slices.Equal(got, parts) {
				return fmt.Errorf("consumer %s on partitions %v, want %v", name, got, parts)
			}
		}
		return nil
	})
}

// filterPartitions returns the sorted partitions of a member consumer's
// filters; pcgroups filters a member's consumer on "<partition>.>" in the
// work-queue stream, whose subjects it prefixes with the partition.
func filterPartitions(filters []string) ([]int, error) {
	out := make([]int, 0, len(filters))
	for _, f := range filters {
		n, rest, _ := strings.Cut(f, ".")
		p, err := strconv.Atoi(n)
		if err != nil || rest != ">" {
			return nil, fmt.Errorf("filter %q is not <partition>.>", f)
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// waitCounted waits until the members' tallies add up to want distinct
// events and the group's work-queue stream is empty (every message acked,
// so none can still be delivered to another member), and returns the
// tallies in the order of members.
func waitCounted(t *testing.T, js jetstream.JetStream, want int, members ...*member) []tally.Snapshot {
	t.Helper()
	ws := group.WorkStreamName(events.StreamName, groupName)
	out := make([]tally.Snapshot, len(members))
	testenv.Eventually(t, 20*time.Second, func() error {
		sum := 0
		for i, m := range members {
			s, err := m.tally(t.Context())
			if err != nil {
				return err
			}
			out[i] = s
			sum += s.Events
		}
		if sum != want {
			return fmt.Errorf("%d of %d events counted", sum, want)
		}
		s, err := js.Stream(t.Context(), ws)
		if err != nil {
			return fmt.Errorf("work stream %s: %w", ws, err)
		}
		if n := s.CachedInfo().State.Msgs; n != 0 {
			return fmt.Errorf("%d messages not yet acked in %s", n, ws)
		}
		return nil
	})
	return out
}

// checkTally checks that a member's tally holds exactly the objects of
// first (each with events 1..firstVersions) plus those of later (each with
// laterVersions more MODIFIED events), nothing else and nothing twice.
func checkTally(t *testing.T, who string, got tally.Snapshot, first []object, firstVersions int, later []object, laterVersions int) {
	t.Helper()
	type counts struct{ added, modified int }
	wantIDs := map[string][]string{}
	wantCounts := map[string]counts{}
	for _, o := range first {
		r := events.ResourceToken(o.res)
		wantIDs[r] = append(wantIDs[r], o.id)
		c := wantCounts[r]
		c.added++
		c.modified += firstVersions - 1
		wantCounts[r] = c
	}
	for _, o := range later {
		r := events.ResourceToken(o.res)
		if !slices.Contains(wantIDs[r], o.id) {
			wantIDs[r] = append(wantIDs[r], o.id)
		}
		c := wantCounts[r]
		c.modified += laterVersions
		wantCounts[r] = c
	}
	wantEvents := len(first)*firstVersions + len(later)*laterVersions
	if got.Events != wantEvents || got.Redeliveries != 0 {
		t.Errorf("%s: %d events, %d redeliveries; want %d, 0", who, got.Events, got.Redeliveries, wantEvents)
	}
	for r, c := range got.Resources {
		want := wantIDs[r]
		slices.Sort(want)
		if missing, extra := setDiff(want, c.SeenIDs), setDiff(c.SeenIDs, want); len(missing)+len(extra) > 0 {
			t.Errorf("%s %s: missing %v, unexpected %v (partitions %v)", who, r, missing, extra, partitionsOf(extra))
		}
		if w := wantCounts[r]; c.Added != w.added || c.Modified != w.modified || c.Deleted != 0 {
			t.Errorf("%s %s: added/modified/deleted %d/%d/%d, want %d/%d/0", who, r, c.Added, c.Modified, c.Deleted, w.added, w.modified)
		}
	}
}

// setDiff returns the elements of a missing from b.
func setDiff(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func partitionsOf(ids []string) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = group.PartitionOf(id, partitions)
	}
	return out
}
