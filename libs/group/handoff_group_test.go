package group_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestHandoffWaitsForOldOwnersWork: when a member joins, a partition
// moves to it only after the old owner's work on it has returned, even
// work that ignores its cancellation (within the stop grace). Before the
// hand-off, the new owner could handle an object's next versions while the
// old owner's handler of an earlier one was still running, so the older
// write landed last.
func TestHandoffWaitsForOldOwnersWork(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	release := make(chan struct{})
	var released atomic.Bool
	var early atomic.Int64 // b's calls before a's stuck handlers returned
	entered := make(chan string, 64)
	handlerA := func(_ context.Context, m group.Message) error {
		if version(m) == 1 && m.Attempt == 1 {
			entered <- m.Event.GetObjectId()
			<-release // deliberately deaf to ctx: a handler finishing a write
		}
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	}
	handlerB := func(_ context.Context, m group.Message) error {
		if !released.Load() {
			early.Add(1)
		}
		j.add(call{member: "b", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	}
	cfgA := testConfig("a")
	cfgA.StopGrace = time.Minute // the hand-off waits for the handler, not the grace
	startMember(t, srv, cfgA, handlerA)
	var once sync.Once
	unblock := func() {
		once.Do(func() {
			released.Store(true)
			close(release)
		})
	}
	t.Cleanup(unblock) // before a stops (cleanups run last first), on a failure too
	waitMembers(t, js, "a")
	const objects = 16
	for o := range objects {
		publish(t, js, fmt.Sprintf("obj-%02d", o), 1)
	}
	for range objects {
		select {
		case <-entered:
		case <-time.After(15 * time.Second):
			t.Fatal("a did not start every object's v1")
		}
	}

	startMember(t, srv, testConfig("b"), handlerB)
	// b's partitions are revoked from a and wait, unassigned, for a's
	// handlers.
	testenv.Eventually(t, 15*time.Second, func() error {
		cfg, err := pcgroups.GetElasticConsumerGroupConfig(t.Context(), js, events.StreamName, testGroup)
		if err != nil {
			return err
		}
		if len(partitionsIn(cfg.MemberMappings, "a")) == cfgA.Partitions {
			return fmt.Errorf("a still owns every partition: %v", cfg.MemberMappings)
		}
		if len(partitionsIn(cfg.MemberMappings, "b")) > 0 {
			return fmt.Errorf("b was given partitions while a's handlers run: %v", cfg.MemberMappings)
		}
		return nil
	})
	for o := range objects {
		publish(t, js, fmt.Sprintf("obj-%02d", o), 2)
	}
	// Every member applied the revocation and reported it (b included);
	// a reports the moved partitions as held while its handlers run, so
	// they stay unassigned.
	testenv.Eventually(t, 15*time.Second, func() error {
		entry, err := configEntry(t, js)
		if err != nil {
			return err
		}
		recs, err := handoffRecords(t, js)
		if err != nil {
			return err
		}
		for _, n := range []string{"a", "b"} {
			if recs[n].Seen < entry.Revision() {
				return fmt.Errorf("member %s reported config %d, the config is at %d", n, recs[n].Seen, entry.Revision())
			}
		}
		var cfg pcgroups.ElasticConsumerGroupConfig
		if err := json.Unmarshal(entry.Value(), &cfg); err != nil {
			return err
		}
		if len(partitionsIn(cfg.MemberMappings, "b")) > 0 {
			return fmt.Errorf("b was given partitions while a's handlers run: %v", cfg.MemberMappings)
		}
		if len(recs["a"].Holding) != cfgA.Partitions {
			return fmt.Errorf("a holds %v, want every partition (its handlers run)", recs["a"].Holding)
		}
		return nil
	})
	if n := early.Load(); n > 0 {
		t.Fatalf("b handled %d events while a's handlers of the same partitions were still running", n)
	}
	unblock()

	waitMembers(t, js, "a", "b")
	testenv.Eventually(t, 30*time.Second, func() error {
		for o := range objects {
			id := fmt.Sprintf("obj-%02d", o)
			if !slices.ContainsFunc(j.snapshot(), func(c call) bool { return c.object == id && c.version == 2 }) {
				return fmt.Errorf("object %s: v2 not handled", id)
			}
		}
		return nil
	})
	if n := early.Load(); n > 0 {
		t.Fatalf("b handled %d events before a's handlers returned", n)
	}
	if !slices.ContainsFunc(j.snapshot(), func(c call) bool { return c.member == "b" }) {
		t.Fatal("b handled nothing: no partition moved, the test proved nothing")
	}
	checkOrder(t, j.snapshot())
}

// configEntry reads the group's pcgroups config.
func configEntry(t *testing.T, js jetstream.JetStream) (jetstream.KeyValueEntry, error) {
	kv, err := js.KeyValue(t.Context(), "elastic-consumer-groups")
	if err != nil {
		return nil, err
	}
	return kv.Get(t.Context(), events.StreamName+"."+testGroup)
}

// handoffState is the hand-off part of a member's heartbeat record.
type handoffState struct {
	Seen    uint64 `json:"seen"`
	Holding []int  `json:"holding"`
}

// handoffRecords reads every member's hand-off state from its heartbeat.
func handoffRecords(t *testing.T, js jetstream.JetStream) (map[string]handoffState, error) {
	kv, err := js.KeyValue(t.Context(), group.MembersBucketName(events.StreamName, testGroup))
	if err != nil {
		return nil, err
	}
	out := map[string]handoffState{}
	for _, n := range []string{"a", "b"} {
		e, err := kv.Get(t.Context(), n)
		if err != nil {
			return nil, fmt.Errorf("record of %s: %w", n, err)
		}
		var rec struct {
			Handoff handoffState `json:"handoff"`
		}
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("record of %s: %w", n, err)
		}
		out[n] = rec.Handoff
	}
	return out, nil
}
