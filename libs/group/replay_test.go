package group_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReplayDeadLetter: an event dead-lettered by one group is listed with
// its reason and, once replayed, handled again by that group only; the
// other group, which handled it the first time, does not see it twice, and
// the letter leaves the dead-letter stream. Replaying the same letter again
// (an operator's second try) stores nothing new.
func TestReplayDeadLetter(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var (
		healed atomic.Bool // the fault is fixed: the handler accepts "bad"
		mu     sync.Mutex
		seen   = map[string][]string{} // group -> object ids handled
	)
	handler := func(name string) group.Handler {
		return func(_ context.Context, m group.Message) error {
			id := m.Event.GetObjectId()
			if name == testGroup && id == "bad" && !healed.Load() {
				return group.Terminal(errors.New("cannot apply yet"))
			}
			mu.Lock()
			defer mu.Unlock()
			seen[name] = append(seen[name], id)
			return nil
		}
	}
	cfgOther := testConfig("o")
	cfgOther.Group = "other"
	otherStats := cfgOther.Stats
	startMember(t, srv, testConfig("a"), handler(testGroup))
	startMember(t, srv, cfgOther, handler("other"))
	waitMembers(t, js, "a")

	publish(t, js, "bad", 1)
	publish(t, js, "good", 1)
	var letters []group.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		if letters, err = group.DeadLetters(t.Context(), js, "", testGroup, 0); err != nil {
			return err
		}
		if len(letters) != 1 {
			return fmt.Errorf("%d dead letters of %s, want 1", len(letters), testGroup)
		}
		return nil
	})
	d := letters[0]
	if d.Group != testGroup || d.Reason != group.ReasonTerminal || d.Subject == "" || d.Attempts != 1 || d.Error == "" {
		t.Fatalf("dead letter %+v, want group %s, reason %s, subject, 1 attempt, error", d, testGroup, group.ReasonTerminal)
	}
	if other, err := group.DeadLetters(t.Context(), js, "", "other", 0); err != nil || len(other) != 0 {
		t.Fatalf("other group's dead letters: %v %v, want none", other, err)
	}
	if all, err := group.DeadLetters(t.Context(), js, "", "", 0); err != nil || len(all) != 1 {
		t.Fatalf("all dead letters: %d %v, want 1", len(all), err)
	}

	healed.Store(true)
	if err := group.Replay(t.Context(), js, d); err != nil {
		t.Fatal(err)
	}
	if err := group.Replay(t.Context(), js, d); err != nil {
		t.Fatalf("second replay of the same letter: %v", err)
	}
	publish(t, js, "after", 1) // both groups see it, after the replay
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen[testGroup]) < 3 || !slices.Contains(seen["other"], "after") {
			return fmt.Errorf("handled %v", seen)
		}
		// bad, good, the replay (acked unhandled), after; the second
		// replay was a duplicate the stream did not store.
		if got := otherStats.Snapshot().Delivered; got != 4 {
			return fmt.Errorf("other group got %d deliveries, want 4", got)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	want := map[string][]string{testGroup: {"good", "bad", "after"}, "other": {"bad", "good", "after"}}
	for g, ids := range want {
		got := slices.Clone(seen[g])
		slices.Sort(got)
		slices.Sort(ids)
		if !slices.Equal(got, ids) {
			t.Errorf("group %s handled %v, want %v once each", g, seen[g], ids)
		}
	}
	if left := dlqMessages(t, js); len(left) != 0 {
		t.Errorf("%d dead letters left after the replay, want 0", len(left))
	}
}

// TestReplayRefusesForeignMessage: a message without the group's headers
// is not replayed anywhere.
func TestReplayRefusesForeignMessage(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	err := group.Replay(t.Context(), js, group.DeadLetter{Seq: 1, Data: []byte("x")})
	if !errors.Is(err, group.ErrNotDeadLetter) {
		t.Fatalf("replay of a foreign message: %v, want ErrNotDeadLetter", err)
	}
	if letters, err := group.DeadLetters(t.Context(), js, "", "", 0); err != nil || letters != nil {
		t.Fatalf("no DLQ stream yet: %v %v, want nothing and no error", letters, err)
	}
}
