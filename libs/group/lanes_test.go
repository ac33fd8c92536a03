package group_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestSlowObjectDoesNotBlockOthers: while one object's handler is stuck,
// the member handles every other object's events; the stuck object's
// later event waits behind its first and runs after it.
func TestSlowObjectDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	started := make(chan struct{}, 1) // the slow call started
	release := make(chan struct{})
	cfg := testConfig("a")
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		id, v := m.Event.GetObjectId(), version(m)
		if id == "slow" && v == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		j.add(call{member: "a", object: id, version: v, attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	publish(t, js, "slow", 1)
	waitSignal(t, started, "slow handler never started")
	publish(t, js, "slow", 2)
	const others = 20
	for o := range others {
		publish(t, js, fmt.Sprintf("o-%02d", o), 1)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := j.successes(); n < others {
			return fmt.Errorf("%d of %d other objects handled while slow is stuck", n, others)
		}
		return nil
	})
	for _, c := range j.snapshot() {
		if c.object == "slow" {
			t.Fatalf("slow v%d handled while its v1 was still running", c.version)
		}
	}
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != others+2 {
			return fmt.Errorf("%d of %d acked", n, others+2)
		}
		return nil
	})
	if seen := checkOrder(t, j.snapshot()); fmt.Sprint(seen["slow"]) != "[1 2]" {
		t.Fatalf("slow handled %v, want [1 2]", seen["slow"])
	}
}

// TestFailingObjectRetriesInPlace: an object whose handler keeps failing
// is retried in its lane (Attempt counts up, no redelivery needed) while
// the other objects are handled; its next event waits until the failing
// one succeeds, and nothing is dead-lettered.
func TestFailingObjectRetriesInPlace(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	const others = 10
	var othersDone atomic.Int32
	var attempts []uint64 // of bad v1; guarded by mu
	var mu sync.Mutex
	cfg := testConfig("a")
	cfg.MaxDeliver = 100
	cfg.Backoff = []time.Duration{20 * time.Millisecond}
	startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		id, v := m.Event.GetObjectId(), version(m)
		if id == "bad" && v == 1 {
			mu.Lock()
			attempts = append(attempts, m.Attempt)
			mu.Unlock()
			// Fails until every other object was handled: with one
			// message in flight (before lanes) its nak held them all back
			// and it ran out of tries. The first try fails whatever the
			// others did: on a loaded machine its lane may start only
			// after all of theirs have finished.
			if othersDone.Load() < others || m.Attempt == 1 {
				j.add(call{member: "a", object: id, version: v, attempt: m.Attempt, ok: false})
				return errors.New("backend down for bad")
			}
		} else if id != "bad" {
			othersDone.Add(1)
		}
		j.add(call{member: "a", object: id, version: v, attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	publish(t, js, "bad", 1)
	publish(t, js, "bad", 2)
	for o := range others {
		publish(t, js, fmt.Sprintf("o-%02d", o), 1)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != others+2 {
			return fmt.Errorf("%d of %d acked (stats %+v)", n, others+2, cfg.Stats.Snapshot())
		}
		return nil
	})
	st := cfg.Stats.Snapshot()
	if st.DeadLettered != 0 {
		t.Fatalf("stats = %+v, want nothing dead-lettered", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 2 || st.Retried != uint64(len(attempts)-1) {
		t.Fatalf("bad v1 tried %v, retried counted %d: want at least one retry, each counted", attempts, st.Retried)
	}
	for i, a := range attempts {
		if a != uint64(i+1) {
			t.Fatalf("bad v1 attempts %v, want 1, 2, 3, ... (retried in place)", attempts)
		}
	}
	// bad v2 only after bad v1 succeeded.
	var v1ok bool
	for _, c := range j.snapshot() {
		if c.object != "bad" {
			continue
		}
		if c.version == 1 && c.ok {
			v1ok = true
		}
		if c.version == 2 && !v1ok {
			t.Fatal("bad v2 handled before bad v1 succeeded")
		}
	}
	checkOrder(t, j.snapshot())
}

// TestRebalanceMidLaneLosesAndReordersNothing: a member holds many
// objects' events in its lanes (each object's v2 running, later versions
// queued) when a second member joins and half the partitions move; the
// moved lanes are cancelled and released, every event is handled, and no
// object's handled versions go backwards across the two members.
func TestRebalanceMidLaneLosesAndReordersNothing(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	joined := make(chan struct{}) // closed once b owns its partitions
	handler := func(name string) group.Handler {
		return func(ctx context.Context, m group.Message) error {
			if name == "a" && version(m) > 1 {
				// a's lanes stay busy until the rebalance is over.
				select {
				case <-joined:
				case <-ctx.Done():
				}
			}
			// Counted only when it finished with its partition still here.
			ok := ctx.Err() == nil
			j.add(call{member: name, object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: ok})
			if !ok {
				return ctx.Err()
			}
			return nil
		}
	}
	cfgA := testConfig("a")
	cfgA.MaxInFlight = 64
	startMember(t, srv, cfgA, handler("a"))
	waitMembers(t, js, "a")
	const objects, versions = 32, 6
	for v := 1; v <= versions; v++ {
		for o := range objects {
			publish(t, js, fmt.Sprintf("obj-%02d", o), v)
		}
	}
	// a holds as many as it may (MaxInFlight and as many again of
	// head-room for lanes in backoff): v2 running in some lanes, more
	// queued.
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfgA.Stats.Snapshot().InFlight; n != uint64(2*cfgA.MaxInFlight) {
			return fmt.Errorf("a holds %d, want %d", n, 2*cfgA.MaxInFlight)
		}
		return nil
	})
	startMember(t, srv, testConfig("b"), handler("b"))
	waitMembers(t, js, "a", "b")
	close(joined)
	testenv.Eventually(t, 30*time.Second, func() error {
		seen := map[string]map[int]bool{}
		for _, c := range j.snapshot() {
			if c.ok {
				if seen[c.object] == nil {
					seen[c.object] = map[int]bool{}
				}
				seen[c.object][c.version] = true
			}
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
	moved := 0
	for o := range objects {
		id := fmt.Sprintf("obj-%02d", o)
		var byA, byB bool
		for _, c := range j.snapshot() {
			if c.object == id && c.ok {
				byA, byB = byA || c.member == "a", byB || c.member == "b"
			}
		}
		if byA && byB {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no object moved mid-stream; the test proved nothing")
	}
	t.Logf("%d of %d objects moved mid-stream", moved, objects)
}

// TestCoalesceQueuedEvents: with Config.Coalesce, the N events of one
// object that queued behind its running handler are handled by one call
// with the newest, and all N are acked after it.
func TestCoalesceQueuedEvents(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	started := make(chan struct{}, 1) // v1's call started
	release := make(chan struct{})
	var coalesced []int // Message.Coalesced of each call; guarded by mu
	var mu sync.Mutex
	cfg := testConfig("a")
	cfg.Coalesce = true
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		mu.Lock()
		coalesced = append(coalesced, m.Coalesced)
		mu.Unlock()
		if version(m) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	const queued = 5
	queueBehindFirst(t, js, cfg, started, queued)
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != queued+1 {
			return fmt.Errorf("%d of %d acked", n, queued+1)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	calls := j.snapshot()
	if len(calls) != 2 || calls[0].version != 1 || calls[1].version != queued+1 {
		t.Fatalf("calls %+v, want v1 then one call with v%d", calls, queued+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(coalesced) != fmt.Sprint([]int{0, queued - 1}) {
		t.Fatalf("Message.Coalesced per call = %v, want [0 %d]", coalesced, queued-1)
	}
	if st := cfg.Stats.Snapshot(); st.Coalesced != queued-1 || st.InFlight != 0 {
		t.Fatalf("stats = %+v, want %d coalesced and nothing held", st, queued-1)
	}
}

// TestConsumerRecreatedUnderHeldMessages: the member's consumer is deleted
// while its lanes hold messages (a stuck handler, more events queued
// behind it); the re-created consumer delivers them again, the lanes ack
// those new deliveries, and no event is handled twice.
func TestConsumerRecreatedUnderHeldMessages(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	started := make(chan struct{}, 1) // stuck v1's call started
	release := make(chan struct{})
	cfg := testConfig("a")
	startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		if m.Event.GetObjectId() == "stuck" && version(m) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	publish(t, js, "stuck", 1)
	waitSignal(t, started, "stuck handler never started")
	publish(t, js, "stuck", 2)
	publish(t, js, "other", 1)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != 1 {
			return fmt.Errorf("%d acked, want other's", n)
		}
		return nil
	})
	work := group.WorkStreamName(events.StreamName, testGroup)
	if err := js.DeleteConsumer(t.Context(), work, "a"); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	// The watchdog re-creates it, and it hands stuck v1 and v2 out again.
	testenv.Eventually(t, 20*time.Second, func() error {
		c, err := js.Consumer(t.Context(), work, "a")
		if err != nil {
			return err
		}
		info, err := c.Info(t.Context())
		if err != nil {
			return err
		}
		if info.NumAckPending != 2 {
			return fmt.Errorf("re-created consumer has %d pending, want 2", info.NumAckPending)
		}
		return nil
	})
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != 3 {
			return fmt.Errorf("%d of 3 acked", n)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	handled := map[string]int{}
	for _, c := range j.snapshot() {
		handled[fmt.Sprintf("%s v%d", c.object, c.version)]++
	}
	for k, n := range handled {
		if n != 1 {
			t.Errorf("%s handled %d times", k, n)
		}
	}
	if len(handled) != 3 {
		t.Errorf("handled %v, want stuck v1, v2 and other v1", handled)
	}
}

// TestUnconfirmedAckNotHandledTwice: a handler succeeds while NATS is down,
// so its ack is never confirmed and the lane moves on to the object's next
// event once NATS is back. When the server redelivers the first event it
// is acked without being handled again (which would apply it after the
// newer one).
func TestUnconfirmedAckNotHandledTwice(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	started := make(chan struct{}, 1) // v1's call started
	release := make(chan struct{})
	cfg := testConfig("a")
	gaveUp := newLogWatch("ack unconfirmed, event may be handled again")
	// No reconnect buffer: an ack sent while NATS is down is lost, not
	// delivered after the reconnect.
	nc, mjs := testenv.JetStream(t, srv, nats.ReconnectBufSize(-1))
	runMember(t, nc, mjs, cfg, func(ctx context.Context, m group.Message) error {
		if version(m) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	}, slog.New(gaveUp))
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	waitSignal(t, started, "v1 never started")
	publish(t, js, "x", 2)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := cfg.Stats.Snapshot().InFlight; n != 2 {
			return fmt.Errorf("%d held, want v1 and v2", n)
		}
		return nil
	})
	srv.Shutdown()
	close(release) // v1 succeeds while NATS is down
	select {
	case <-gaveUp.seen:
	case <-time.After(30 * time.Second):
		t.Fatal("the lane never gave up on v1's ack")
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	waitWorkQueue(t, js, 0)
	var versions []int
	for _, c := range j.snapshot() {
		versions = append(versions, c.version)
	}
	if fmt.Sprint(versions) != "[1 2]" {
		t.Fatalf("x handled as %v, want [1 2]", versions)
	}
}
