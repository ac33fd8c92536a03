package group_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestKilledMemberPartitionsMove kills a member abruptly (its connection
// closes while a handler holds an unacked message): after its heartbeat
// expires the survivor takes its partitions, including the unacked
// message, and every event is handled with per-object order kept.
func TestKilledMemberPartitionsMove(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	stuck := make(chan struct{})   // closed when a's handler holds a message
	release := make(chan struct{}) // closed to let a's handler return
	var once sync.Once
	var aCalls int
	var mu sync.Mutex // guards aCalls
	handlerA := func(_ context.Context, m group.Message) error {
		mu.Lock()
		aCalls++
		n := aCalls
		mu.Unlock()
		if n == 5 { // die holding the 5th message
			j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: false})
			once.Do(func() { close(stuck) })
			<-release
			return nil
		}
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	}
	handlerB := func(_ context.Context, m group.Message) error {
		j.add(call{member: "b", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	}
	a := startMember(t, srv, testConfig("a"), handlerA)
	startMember(t, srv, testConfig("b"), handlerB)
	mapping := waitMembers(t, js, "a", "b")
	aParts := partitionsIn(mapping, "a")

	const objects, versions = 16, 4
	for v := 1; v <= versions; v++ {
		for o := range objects {
			publish(t, js, fmt.Sprintf("obj-%02d", o), v)
		}
	}
	waitSignal(t, stuck, "member a never received its 5th message")
	killed := time.Now()
	a.nc.Close() // abrupt: no ack, no leave, heartbeat stops
	close(release)

	// Failover: b handles an object of a's partitions after the kill.
	var failover time.Duration
	testenv.Eventually(t, 15*time.Second, func() error {
		for _, c := range j.snapshot() {
			if c.member == "b" && c.at.After(killed) && slices.Contains(aParts, group.PartitionOf(c.object, 8)) {
				failover = c.at.Sub(killed)
				return nil
			}
		}
		return fmt.Errorf("b has not taken over a's partitions %v", aParts)
	})
	t.Logf("failover after kill: %s (member ttl 1s, heartbeat 333ms)", failover.Round(10*time.Millisecond))

	testenv.Eventually(t, 15*time.Second, func() error {
		seen := map[string]map[int]bool{}
		for _, c := range j.snapshot() {
			if !c.ok {
				continue
			}
			if seen[c.object] == nil {
				seen[c.object] = map[int]bool{}
			}
			seen[c.object][c.version] = true
		}
		for o := range objects {
			id := fmt.Sprintf("obj-%02d", o)
			if len(seen[id]) != versions {
				return fmt.Errorf("object %s: handled versions %v", id, seen[id])
			}
		}
		return nil
	})
	checkOrder(t, j.snapshot())
}
