package group_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
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
	// Longer than the wait for the healthy object below, so that it
	// cannot be met by waiting for the backoff to end.
	const backoff = 20 * time.Second
	srv, js := setup(t)
	var j journal
	var mu sync.Mutex
	badTries := map[string][]uint64{} // guarded by mu; attempts of each bad object
	var okDuringFirstTries []bool     // guarded by mu; per healthy call: were the bad ones all at their first try
	var broken atomic.Bool
	broken.Store(true)
	cfg := testConfig("a")
	cfg.MaxInFlight = 2
	cfg.Coalesce, cfg.ParkFailures = true, true
	cfg.MaxDeliver = 3
	cfg.Backoff = []time.Duration{backoff}
	bad := []string{"bad-0", "bad-1", "bad-2", "bad-3"} // 2 x MaxInFlight
	startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		id, v := m.Event.GetObjectId(), version(m)
		mu.Lock()
		defer mu.Unlock()
		if slices.Contains(bad, id) {
			badTries[id] = append(badTries[id], m.Attempt)
			if broken.Load() {
				j.add(call{member: "a", object: id, version: v, attempt: m.Attempt, ok: false})
				return errors.New("admission webhook of this tenant down")
			}
		}
		if id == "ok" {
			first := true
			for _, b := range bad {
				first = first && len(badTries[b]) == 1
			}
			okDuringFirstTries = append(okDuringFirstTries, first)
		}
		j.add(call{member: "a", object: id, version: v, attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	for _, b := range bad {
		publish(t, js, b, 1)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.Retried != uint64(len(bad)) {
			return fmt.Errorf("%d of %d failing objects in backoff", st.Retried, len(bad))
		}
		return nil
	})

	const versions = 3
	for v := 1; v <= versions; v++ {
		publish(t, js, "ok", v)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != versions {
			return fmt.Errorf("healthy object: %d of %d events handled while %d objects wait out a %s backoff", n, versions, len(bad), backoff)
		}
		return nil
	})
	mu.Lock()
	if slices.Contains(okDuringFirstTries, false) {
		t.Errorf("healthy object handled only after a failing object's backoff (per call, failing ones at first try: %v)", okDuringFirstTries)
	}
	mu.Unlock()
	// The first failure held its message (head-room left); each later
	// one found lanes in backoff holding MaxInFlight and parked.
	if st := cfg.Stats.Snapshot(); st.Parked != uint64(len(bad)-1) || st.ParkedObjects != len(bad)-1 || st.InFlight != 1 {
		t.Errorf("stats %+v, want %d parked, 1 held", st, len(bad)-1)
	}
	waitWorkQueue(t, js, 1)

	// The failing objects' next events queue behind them and are taken
	// into the retry (Coalesce); the dependency is back by then.
	for _, b := range bad {
		publish(t, js, b, 2)
	}
	broken.Store(false)
	testenv.Eventually(t, backoff+30*time.Second, func() error {
		st := cfg.Stats.Snapshot()
		if st.Acked != versions+2*uint64(len(bad)) || st.InFlight != 0 || st.ParkedObjects != 0 || st.DeadLettered != 0 {
			return fmt.Errorf("stats %+v, want every event handled, none held or parked", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	mu.Lock()
	for _, b := range bad {
		if got := fmt.Sprint(badTries[b]); got != "[1 2]" {
			t.Errorf("%s tried %s, want [1 2] (retried in place with its newer event)", b, got)
		}
	}
	mu.Unlock()
	seen := checkOrder(t, j.snapshot())
	for _, b := range bad {
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
	cfg := testConfig("a")
	cfg.MaxInFlight = 1
	cfg.Coalesce, cfg.ParkFailures = true, true
	cfg.MaxDeliver = 3
	cfg.Backoff = []time.Duration{50 * time.Millisecond}
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
	cfg := testConfig("a")
	cfg.MaxInFlight = 1
	cfg.Coalesce, cfg.ParkFailures = true, true
	cfg.Backoff = []time.Duration{time.Hour}
	a := startMember(t, srv, cfg, func(context.Context, group.Message) error {
		return errors.New("broken until the member goes")
	})
	waitMembers(t, js, "a")
	publish(t, js, "x", 1)
	publish(t, js, "y", 1)
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.Parked != 2 || st.ParkedObjects != 2 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want x and y parked", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	publish(t, js, "y", 2) // parked with y's v1, not held
	testenv.Eventually(t, 15*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.Parked != 3 || st.InFlight != 0 {
			return fmt.Errorf("stats %+v, want y v2 parked too", st)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	if err := a.stop(t); err != nil {
		t.Fatalf("stop a: %v", err)
	}

	var j journal
	var replayed atomic.Int32
	cfgB := testConfig("b")
	cfgB.Coalesce, cfgB.ParkFailures = true, true
	startMember(t, srv, cfgB, func(_ context.Context, m group.Message) error {
		if m.Header.Get(group.HeaderReplayGroup) == testGroup {
			replayed.Add(1)
		}
		j.add(call{member: "b", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfgB.Stats.Snapshot().Acked; n != 2 {
			return fmt.Errorf("b handled %d events, want x v1 and y v2", n)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	seen := checkOrder(t, j.snapshot())
	if got := fmt.Sprint(seen["x"], seen["y"]); got != "[1] [2]" {
		t.Errorf("b handled x %v, y %v; want x v1 and y v2 only (the newest of each, published again)", seen["x"], seen["y"])
	}
	if n := replayed.Load(); n != 2 {
		t.Errorf("%d events came as the group's replay, want 2 (x v1, y v2)", n)
	}
}

// TestParkedEventKeptWhenNewerIsNotForHandler: a parked object whose
// lane holds a newer message the handler never gets (another group's
// replay, an undecodable payload) must still have its parked event
// published again on stop: the next owner acks / dead-letters the newer
// message unhandled, so it does not stand for the object's state.
func TestParkedEventKeptWhenNewerIsNotForHandler(t *testing.T) {
	for _, tc := range []struct {
		name string
	}{
		{name: "other group's replay"},
		{name: "undecodable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, js := setup(t)
			cfg := testConfig("a")
			cfg.MaxInFlight = 1
			cfg.Coalesce, cfg.ParkFailures = true, true
			cfg.Backoff = []time.Duration{time.Hour}
			a := startMember(t, srv, cfg, func(context.Context, group.Message) error {
				return errors.New("broken until the member goes")
			})
			waitMembers(t, js, "a")
			publish(t, js, "x", 1)
			testenv.Eventually(t, 15*time.Second, func() error {
				if st := cfg.Stats.Snapshot(); st.Parked != 1 || st.ParkedObjects != 1 || st.InFlight != 0 {
					return fmt.Errorf("stats %+v, want x parked", st)
				}
				return nil
			})
			msg := eventMsg(t, t.Context(), "x", 2)
			if tc.name == "undecodable" {
				msg.Data = []byte("\xff not a protobuf")
			} else {
				msg.Header.Set(group.HeaderReplayGroup, "another-group")
			}
			if _, err := js.PublishMsg(t.Context(), msg); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 15*time.Second, func() error {
				if st := cfg.Stats.Snapshot(); st.InFlight != 1 {
					return fmt.Errorf("stats %+v, want the newer message held in x's lane", st)
				}
				return nil
			})
			if err := a.stop(t); err != nil {
				t.Fatalf("stop a: %v", err)
			}
			var handledX atomic.Int32
			cfgB := testConfig("b")
			cfgB.Coalesce, cfgB.ParkFailures = true, true
			startMember(t, srv, cfgB, func(_ context.Context, m group.Message) error {
				if m.Event.GetObjectId() == "x" && version(m) == 1 {
					handledX.Add(1)
				}
				return nil
			})
			waitMembers(t, js, "b")
			// The parked x v1 must reach b: b acks (or dead-letters) the
			// newer message unhandled.
			testenv.Eventually(t, 15*time.Second, func() error {
				if handledX.Load() == 0 {
					return fmt.Errorf("x v1 (parked on a) never handled by b; b stats %+v", cfgB.Stats.Snapshot())
				}
				return nil
			})
		})
	}
}

// TestParkedEventKeptWhenDeadLetterFailsOnStop: a parked object at its
// last try whose dead-letter publish fails (the DLQ stream full, discard
// new) and whose member then stops does not vanish: the server no longer
// has it (parked means acked), so it is published again for the next
// owner.
func TestParkedEventKeptWhenDeadLetterFailsOnStop(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	cfg.MaxInFlight = 1
	cfg.Coalesce, cfg.ParkFailures = true, true
	cfg.MaxDeliver = 2
	cfg.Backoff = []time.Duration{50 * time.Millisecond, time.Hour}
	failing := newLogWatch("dead letter publish failed, will retry")
	nc, jsA := testenv.JetStream(t, srv)
	var attempts atomic.Int32
	a := runMember(t, nc, jsA, cfg, func(_ context.Context, m group.Message) error {
		if m.Attempt == 2 {
			// The DLQ stream is full (DiscardNew) when the dead letter is
			// published: the publish fails and is retried after Backoff.
			ctx := context.Background()
			s, err := js.Stream(ctx, bus.DLQStreamName)
			if err != nil {
				return fmt.Errorf("dlq stream: %w", err)
			}
			sc := s.CachedInfo().Config
			sc.MaxMsgs, sc.Discard = 1, jetstream.DiscardNew
			if _, err := js.UpdateStream(ctx, sc); err != nil {
				return fmt.Errorf("update dlq: %w", err)
			}
			if _, err := js.Publish(ctx, events.DLQPrefix+".filler", []byte("x")); err != nil {
				return fmt.Errorf("fill dlq: %w", err)
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
