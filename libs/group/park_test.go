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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestParkedFailuresDoNotStallOtherObjects: with ParkFailures, as many
// failing objects as the consumer's whole window (2 x MaxInFlight) no
// longer hold the member's other objects back for their backoff: once
// lanes in backoff hold MaxInFlight messages, the next failing ones are
// acked and retried from memory. Their retries, order and success after
// the dependency comes back are as before.
func TestParkedFailuresDoNotStallOtherObjects(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var broken atomic.Bool
	broken.Store(true)
	p := &stallProbe{bad: []string{"bad-0", "bad-1", "bad-2", "bad-3"}, // 2 x MaxInFlight
		fails: func(int) bool { return broken.Load() }}
	cfg := testConfig("a")
	cfg.MaxInFlight = 2
	cfg.Coalesce, cfg.ParkFailures = true, true
	cfg.MaxDeliver = 3
	cfg.Backoff = []time.Duration{stallBackoff}
	startMember(t, srv, cfg, p.handle)
	waitMembers(t, js, "a")
	const versions = 3
	p.handledBesideBackoffs(t, js, cfg.Stats, versions)
	// The first failure held its message (head-room left); each later
	// one found lanes in backoff holding MaxInFlight and parked.
	if st := cfg.Stats.Snapshot(); st.Parked != uint64(len(p.bad)-1) || st.ParkedObjects != len(p.bad)-1 || st.InFlight != 1 {
		t.Errorf("stats %+v, want %d parked, 1 held", st, len(p.bad)-1)
	}
	waitWorkQueue(t, js, 1)

	// The failing objects' next events queue behind them and are taken
	// into the retry (Coalesce); the dependency is back by then.
	for _, b := range p.bad {
		publish(t, js, b, 2)
	}
	broken.Store(false)
	testenv.Eventually(t, stallBackoff+30*time.Second, func() error {
		st := cfg.Stats.Snapshot()
		if st.Acked != versions+2*uint64(len(p.bad)) || st.InFlight != 0 || st.ParkedObjects != 0 || st.DeadLettered != 0 {
			return fmt.Errorf("stats %+v, want every event handled, none held or parked", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	for _, b := range p.bad {
		if got := p.attempts(b); got != "[1 2]" {
			t.Errorf("%s tried %s, want [1 2] (retried in place with its newer event)", b, got)
		}
	}
	seen := checkOrder(t, p.calls.snapshot())
	for _, b := range p.bad {
		if got := fmt.Sprint(seen[b]); got != "[2]" {
			t.Errorf("%s handled %s, want [2] (v1 and v2 in the retry's one call)", b, got)
		}
	}
}

// TestParkedEventDeadLettered: a parked object that keeps failing still
// reaches the DLQ after MaxDeliver tries, its event published from
// memory, its attempts counted through the park; the member holds
// nothing after.
func TestParkedEventDeadLettered(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := parkingConfig("a", 50*time.Millisecond)
	cfg.MaxDeliver = 3
	var mu sync.Mutex
	var attempts []uint64 // guarded by mu
	var lettered []group.Message
	cfg.OnDeadLetter = func(_ context.Context, m group.Message, _ string, _ error) {
		mu.Lock()
		defer mu.Unlock()
		lettered = append(lettered, m)
	}
	startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, m.Attempt)
		return errors.New("always broken")
	})
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.DeadLettered != 1 || st.InFlight != 0 || st.ParkedObjects != 0 {
			return fmt.Errorf("stats %+v, want x dead-lettered, nothing held or parked", st)
		}
		return nil
	})
	st := cfg.Stats.Snapshot()
	if st.Parked != 1 || st.Acked != 0 {
		t.Errorf("stats %+v, want x parked once (MaxInFlight 1: its own lane in backoff uses the head-room) and never counted as handled", st)
	}
	waitWorkQueue(t, js, 0)
	mu.Lock()
	if got := fmt.Sprint(attempts); got != "[1 2 3]" {
		t.Errorf("attempts %s, want [1 2 3]", got)
	}
	if len(lettered) != 1 || lettered[0].Attempt != 3 || version(lettered[0]) != 1 {
		t.Errorf("dead-letter reports %+v, want x v1 after 3 tries", lettered)
	}
	mu.Unlock()
	letters, err := group.DeadLetters(t.Context(), js, "", testGroup, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 || letters[0].Attempts != 3 || letters[0].Reason != group.ReasonExhausted || len(letters[0].Data) == 0 {
		t.Fatalf("dead letters %+v, want x's event after 3 tries", letters)
	}
}

// TestParkedEventPublishedAgainOnStop: the server forgets a parked event,
// so a member that stops while it waits for its retry publishes it again
// for its group, and the next member handles it. An event of a parked
// object that arrives while it waits is parked with it, and only the
// newest is published again (the handler is level-triggered).
func TestParkedEventPublishedAgainOnStop(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := parkingConfig("a", time.Hour)
	a := startMember(t, srv, cfg, failUntilStop)
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	publish(t, js, "y", 1)
	waitParked(t, cfg, 2, 2)
	waitWorkQueue(t, js, 0)
	publish(t, js, "y", 2) // parked with y's v1, not held
	waitParked(t, cfg, 3, 2)
	waitWorkQueue(t, js, 0)
	b := handOver(t, srv, js, a, 2, "x v1 and y v2")
	seen := checkOrder(t, b.calls.snapshot())
	if got := fmt.Sprint(seen["x"], seen["y"]); got != "[1] [2]" {
		t.Errorf("b handled x %v, y %v; want x v1 and y v2 only (the newest of each, published again)", seen["x"], seen["y"])
	}
	if n := b.replayed.Load(); n != 2 {
		t.Errorf("%d events came as the group's replay, want 2 (x v1, y v2)", n)
	}
}

// TestParkedLaneSettlesWhatHandlerDoesNotGet: a replay meant for another
// group that reaches a parked lane during its backoff is acked then, as a
// batch acks it, not held in the consumer's window for the whole backoff;
// the object's later event behind it is parked, not held, and is the one
// published again on stop.
func TestParkedLaneSettlesWhatHandlerDoesNotGet(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := parkingConfig("a", time.Hour)
	var calls journal
	a := startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
		calls.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt})
		return failUntilStop(ctx, m)
	})
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	waitParked(t, cfg, 1, 1)
	publishNotForHandler(t, js, "x", 2, false)
	publish(t, js, "x", 3)
	// x v1's backoff has most of an hour to go.
	testenv.Eventually(t, 15*time.Second, func() error {
		st := cfg.Stats.Snapshot()
		if st.Parked != 2 || st.InFlight != 0 || st.Delivered != 3 || st.DeadLettered != 0 {
			return fmt.Errorf("stats %+v, want x v2 acked and v3 parked during x v1's backoff, nothing held", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	if got := calls.snapshot(); len(got) != 1 || got[0].version != 1 || got[0].attempt != 1 {
		t.Errorf("a's handler calls %+v, want x v1's first try only", got)
	}
	b := handOver(t, srv, js, a, 1, "x v3")
	if got := fmt.Sprint(checkOrder(t, b.calls.snapshot())["x"]); got != "[3]" || b.replayed.Load() != 1 {
		t.Errorf("b handled x %s (%d as the group's replay), want v3 once, published again as parked", got, b.replayed.Load())
	}
}

// TestParkedRetryNotHeldByNewerUndecodable: x v1 is parked with an
// undecodable x v2 behind it, and the DLQ cannot store x v2's letter
// (full). x v1's retry must not wait for x v2's dead letter, as an
// unparked lane's does not (takeQueued stops before v2): the parked wait
// leaves an undecodable message for the lane's next batch instead of
// dead-lettering it, which blocked in the letter's publish.
func TestParkedRetryNotHeldByNewerUndecodable(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := parkingConfig("a", 100*time.Millisecond)
	failing := newLogWatch("dead letter publish failed, will retry")
	nc, jsA := testenv.JetStream(t, srv)
	tried := make(chan struct{})
	proceed := make(chan struct{})
	var calls journal
	runMember(t, nc, jsA, cfg, func(ctx context.Context, m group.Message) error {
		calls.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: m.Attempt > 1})
		if m.Attempt > 1 {
			return nil
		}
		close(tried)
		select {
		case <-proceed:
		case <-ctx.Done():
		}
		return errors.New("dependency down")
	}, slog.New(failing))
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	waitSignal(t, tried, "x v1 never tried")
	// While x v1's first try runs, x v2 (undecodable) is filed behind it
	// and the DLQ loses its room.
	publishNotForHandler(t, js, "x", 2, true)
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.InFlight != 2 {
			return fmt.Errorf("stats %+v, want x v1 and v2 held", st)
		}
		return nil
	})
	if err := fillDLQ(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	waitSignal(t, failing.seen, "x v2's dead letter publish never failed")
	var retried bool
	for _, c := range calls.snapshot() {
		retried = retried || (c.object == "x" && c.version == 1 && c.attempt == 2)
	}
	if !retried {
		t.Errorf("x v1 not retried before x v2's dead letter (calls %+v, stats %+v): the parked retry waits on a newer message's dead letter",
			calls.snapshot(), cfg.Stats.Snapshot())
	}
}

// TestParkedEventKeptWhenNewerIsNotForHandler: a parked object whose
// lane holds a newer message the handler never gets (another group's
// replay, an undecodable payload) must still have its parked event
// published again on stop: the next owner acks / dead-letters the newer
// message unhandled, so it does not stand for the object's state.
func TestParkedEventKeptWhenNewerIsNotForHandler(t *testing.T) {
	eachNotForHandler(t, func(t *testing.T, undecodable bool) {
		srv, js := setup(t)
		// x is parked after its first try. A parked lane's wait settles
		// such a message at once (TestParkedLaneSettlesWhatHandlerDoesNotGet),
		// so it comes while x's second try runs, and the member stops
		// then: the try's ctx ends with the stop grace.
		cfg := parkingConfig("a", 50*time.Millisecond, time.Hour)
		started := make(chan struct{}, 1)
		a := startMember(t, srv, cfg, func(ctx context.Context, m group.Message) error {
			if m.Attempt == 1 {
				return failUntilStop(ctx, m)
			}
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return fmt.Errorf("second try: %w", ctx.Err())
		})
		waitMembers(t, js, "a")
		publish(t, js, "x", 1)
		waitSignal(t, started, "x's second try never started")
		if st := cfg.Stats.Snapshot(); st.Parked != 1 || st.ParkedObjects != 1 || st.InFlight != 0 {
			t.Fatalf("stats %+v, want x parked", st)
		}
		publishNotForHandler(t, js, "x", 2, undecodable)
		testenv.Eventually(t, 15*time.Second, func() error {
			if st := cfg.Stats.Snapshot(); st.InFlight != 1 {
				return fmt.Errorf("stats %+v, want the newer message held in x's lane", st)
			}
			return nil
		})
		// The parked x v1 must reach b: b acks (or dead-letters) the
		// newer message unhandled.
		b := handOver(t, srv, js, a, 1, "x v1, parked on a")
		if got := fmt.Sprint(checkOrder(t, b.calls.snapshot())["x"]); got != "[1]" {
			t.Errorf("b handled x %s, want v1 (parked on a)", got)
		}
	})
}

// TestParkedEventKeptWhenDeadLetterFailsOnStop: a parked object at its
// last try whose dead-letter publish fails (the DLQ stream full, discard
// new) and whose member then stops does not vanish: the server no longer
// has it (parked means acked), so it is published again for the next
// owner.
func TestParkedEventKeptWhenDeadLetterFailsOnStop(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := parkingConfig("a", 50*time.Millisecond, time.Hour)
	cfg.MaxDeliver = 2
	failing := newLogWatch("dead letter publish failed, will retry")
	nc, jsA := testenv.JetStream(t, srv)
	var attempts atomic.Int32
	a := runMember(t, nc, jsA, cfg, func(_ context.Context, m group.Message) error {
		if m.Attempt == 2 {
			// The DLQ stream is full (DiscardNew) when the dead letter is
			// published: the publish fails and is retried after Backoff.
			if err := fillDLQ(context.Background(), js); err != nil {
				return err
			}
		}
		attempts.Add(1)
		return errors.New("always broken")
	}, slog.New(failing))
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	waitSignal(t, failing.seen, "the dead letter publish never failed")
	if st := cfg.Stats.Snapshot(); st.Parked != 1 || attempts.Load() != 2 {
		t.Fatalf("stats %+v, %d attempts; want x parked and tried twice", st, attempts.Load())
	}
	if err := a.stop(t); err != nil {
		t.Fatalf("stop a: %v", err)
	}
	st := cfg.Stats.Snapshot()
	if st.DeadLettered != 0 {
		t.Fatalf("stats %+v: dead-lettered after all", st)
	}
	// Neither dead-lettered nor acked as handled: the event must be in the
	// stream again for the next owner.
	waitWorkQueue(t, js, 1)
}

// eachNotForHandler runs test as a parallel subtest for each kind of
// message the handler never gets: another group's replay, and an
// undecodable payload (undecodable true).
func eachNotForHandler(t *testing.T, test func(t *testing.T, undecodable bool)) {
	t.Helper()
	for _, undecodable := range []bool{false, true} {
		name := "other group's replay"
		if undecodable {
			name = "undecodable"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, undecodable)
		})
	}
}

// parkingConfig is the config of a member of MaxInFlight 1 that parks
// every failed try (its own lane waiting out a backoff fills the
// head-room), with backoff as Config.Backoff.
func parkingConfig(member string, backoff ...time.Duration) group.Config {
	cfg := testConfig(member)
	cfg.MaxInFlight = 1
	cfg.Coalesce, cfg.ParkFailures = true, true
	cfg.Backoff = backoff
	return cfg
}

// failUntilStop is the handler of a member whose every try fails.
func failUntilStop(context.Context, group.Message) error {
	return errors.New("broken until the member goes")
}

// waitParked waits until the member has parked parked messages, of
// objects objects parked now, and holds none.
func waitParked(t *testing.T, cfg group.Config, parked uint64, objects int) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.Parked != parked || st.ParkedObjects != objects || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want %d parked of %d objects, none held", st, parked, objects)
		}
		return nil
	})
}

// publishNotForHandler publishes version v of session id as a message
// the handler never gets: an undecodable payload, or a replay meant for
// another group.
func publishNotForHandler(t *testing.T, js jetstream.JetStream, id string, v int, undecodable bool) {
	t.Helper()
	msg := eventMsg(t, t.Context(), id, v)
	if undecodable {
		msg.Data = []byte("\xff not a protobuf")
	} else {
		msg.Header.Set(group.HeaderReplayGroup, "another-group")
	}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatalf("publish %s v%d: %v", id, v, err)
	}
}

// nextOwner is member b, started in the place of member a (handOver): it
// handles every event at once and journals it.
type nextOwner struct {
	cfg      group.Config
	calls    journal
	replayed atomic.Int32 // calls of events that came as the group's replay (HeaderReplayGroup)
}

// handOver stops member a, starts member b in its place and waits until b
// has handled n events (what names them) and the work queue is empty.
func handOver(t *testing.T, srv *natsserver.Server, js jetstream.JetStream, a *member, n uint64, what string) *nextOwner {
	t.Helper()
	if err := a.stop(t); err != nil {
		t.Fatalf("stop a: %v", err)
	}
	b := &nextOwner{cfg: testConfig("b")}
	b.cfg.Coalesce, b.cfg.ParkFailures = true, true
	startMember(t, srv, b.cfg, func(_ context.Context, m group.Message) error {
		if m.Header.Get(group.HeaderReplayGroup) == testGroup {
			b.replayed.Add(1)
		}
		b.calls.add(call{member: "b", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "b")
	testenv.Eventually(t, 15*time.Second, func() error {
		if got := b.cfg.Stats.Snapshot().Acked; got != n {
			return fmt.Errorf("b handled %d events, want %d: %s", got, n, what)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	return b
}
