package group_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReadinessMovesPartitions: a member whose Ready fails (cut off from
// its API, NATS still fine) gives its partitions to its ready peer once
// NotReadyAfter has passed, and gets them back when it is ready again;
// with every member not ready nothing moves, and a member back from
// failing takes a not-ready peer's partitions only once it has settled.
func TestReadinessMovesPartitions(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	const settle = 2 * time.Second // NotReadyAfter
	var j journal
	var failing [2]atomic.Bool // a, b
	stats := [2]*group.Stats{{}, {}}
	for i, name := range []string{"a", "b"} {
		cfg := testConfig(name)
		cfg.NotReadyAfter, cfg.Stats = settle, stats[i]
		cfg.Ready = func() error {
			if failing[i].Load() {
				return errors.New("api unreachable")
			}
			return nil
		}
		startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
			j.add(call{member: name, object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
			return nil
		})
	}
	before := waitMembers(t, js, "a", "b")
	aParts := partitionsIn(before, "a")
	const objects = 32
	// handledBy publishes version v of every object, waits until each was
	// handled and returns who handled each object of inParts's partitions.
	handledBy := func(v int, inParts []int) map[string]string {
		t.Helper()
		for o := range objects {
			publish(t, js, fmt.Sprintf("obj-%02d", o), v)
		}
		by := map[string]string{}
		testenv.Eventually(t, 15*time.Second, func() error {
			clear(by)
			n := 0
			for _, c := range j.snapshot() {
				if c.ok && c.version == v {
					n++
					if slices.Contains(inParts, group.PartitionOf(c.object, 8)) {
						by[c.object] = c.member
					}
				}
			}
			if n < objects {
				return fmt.Errorf("%d of %d objects handled at version %d", n, objects, v)
			}
			return nil
		})
		if len(by) == 0 {
			t.Fatalf("no object hashes to partitions %v; the test proves nothing", inParts)
		}
		return by
	}
	// only fails unless every object in by was handled by member.
	only := func(by map[string]string, member, when string) {
		t.Helper()
		for o, m := range by {
			if m != member {
				t.Errorf("%s: object %s (partition %d) handled by %s, want %s", when, o, group.PartitionOf(o, 8), m, member)
			}
		}
	}

	failing[0].Store(true)
	waitMembers(t, js, "b")
	if !stats[0].Snapshot().NotReady {
		t.Error("a's partitions moved but a does not report itself not ready")
	}
	only(handledBy(1, aParts), "b", "a not ready")

	failing[0].Store(false)
	if got := partitionsIn(waitMembers(t, js, "a", "b"), "a"); !slices.Equal(got, aParts) {
		t.Errorf("a ready again got partitions %v, want its own %v back", got, aParts)
	}
	only(handledBy(2, aParts), "a", "a ready again")

	// Both not ready (the API down for everyone): nothing moves.
	entry, err := configEntry(t, js)
	if err != nil {
		t.Fatal(err)
	}
	rev := entry.Revision()
	failing[0].Store(true)
	failing[1].Store(true)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !stats[0].Snapshot().NotReady || !stats[1].Snapshot().NotReady {
			return errors.New("a and b not both not ready yet")
		}
		return nil
	})
	// Each member reconciles after every heartbeat: after two more of
	// each, both have reconciled seeing both not ready.
	waitHeartbeats(t, js, 2, "a", "b")
	if entry, err = configEntry(t, js); err != nil {
		t.Fatal(err)
	}
	if entry.Revision() != rev {
		t.Fatalf("group config rewritten (revision %d -> %d) while no member was ready", rev, entry.Revision())
	}

	// a is back, b still not ready: b's partitions go to a, but only once
	// a has been ready for NotReadyAfter (members of a common outage come
	// back seconds apart and must not hand each other their partitions).
	kv, err := js.KeyValue(t.Context(), "elastic-consumer-groups")
	if err != nil {
		t.Fatal(err)
	}
	// The bucket keeps one revision per key: watch for the first rewrite.
	watch, err := kv.Watch(t.Context(), events.StreamName+"."+testGroup, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }() // the test's own watch; its end says nothing
	back := time.Now()
	failing[0].Store(false)
	waitMembers(t, js, "a")
	select {
	case e := <-watch.Updates():
		if d := e.Created().Sub(back); e.Revision() <= rev || d < settle {
			t.Errorf("b's partitions moved %s after a was ready again (revision %d), want no sooner than NotReadyAfter (%s)", d.Round(time.Millisecond), e.Revision(), settle)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the group config was rewritten, yet its watch saw nothing")
	}
	only(handledBy(3, partitionsIn(before, "b")), "a", "b not ready, a settled")
	checkOrder(t, j.snapshot())
}

// waitHeartbeats waits until each named member has written n more
// heartbeats than when it was called.
func waitHeartbeats(t *testing.T, js jetstream.JetStream, n uint64, names ...string) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), group.MembersBucketName(events.StreamName, testGroup))
	if err != nil {
		t.Fatalf("members bucket: %v", err)
	}
	// Polled: two heartbeats between two looks count as one, which only
	// makes the wait longer.
	last, counted := map[string]uint64{}, map[string]uint64{}
	for _, name := range names {
		if last[name], err = revision(t.Context(), kv, name); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, name := range names {
			rev, err := revision(t.Context(), kv, name)
			if err != nil {
				return err
			}
			if rev != last[name] {
				counted[name]++
				last[name] = rev
			}
			if counted[name] < n {
				return fmt.Errorf("%s: %d of %d heartbeats", name, counted[name], n)
			}
		}
		return nil
	})
}
