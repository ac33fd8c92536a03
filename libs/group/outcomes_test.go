package group_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/synadia-io/orbit.go/pcgroups"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestSameEventDeadInTwoGroups: the dead letter's Msg-Id is per group, so
// one event that dies in two groups is two letters, one per group, not
// one letter deduplicated away by the DLQ stream.
func TestSameEventDeadInTwoGroups(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	fail := func(context.Context, group.Message) error { return group.Terminal(errors.New("invalid name")) }
	ca, cb := testConfig("a"), testConfig("a")
	cb.Group = testGroup + "-other"
	startMember(t, srv, ca, fail)
	startMember(t, srv, cb, fail)
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1)

	testenv.Eventually(t, 15*time.Second, func() error {
		if a, b := ca.Stats.Snapshot().DeadLettered, cb.Stats.Snapshot().DeadLettered; a != 1 || b != 1 {
			return fmt.Errorf("dead-lettered: %s %d, %s %d; want 1 each", ca.Group, a, cb.Group, b)
		}
		return nil
	})
	letters, err := group.DeadLetters(t.Context(), js, "", "", 0)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	groups := map[string]int{}
	for _, d := range letters {
		groups[d.Group]++
	}
	if len(letters) != 2 || groups[ca.Group] != 1 || groups[cb.Group] != 1 {
		t.Fatalf("dlq holds %d letters of groups %v, want one of %s and one of %s", len(letters), groups, ca.Group, cb.Group)
	}
}

// TestDeadLetterErrorHeaderHasNoNewline: a handler error spanning lines
// is stored in the dead letter's error header on one line.
func TestDeadLetterErrorHeaderHasNoNewline(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	cfg := testConfig("a")
	startMember(t, srv, cfg, func(context.Context, group.Message) error {
		return group.Terminal(errors.New("line one\nline two\r\nline three"))
	})
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1)

	var letters []group.DeadLetter
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		if letters, err = group.DeadLetters(t.Context(), js, "", testGroup, 0); err != nil {
			return err
		}
		if len(letters) != 1 {
			return fmt.Errorf("dlq holds %d letters, want 1 (stats %+v)", len(letters), cfg.Stats.Snapshot())
		}
		return nil
	})
	got := letters[0].Error
	if strings.ContainsAny(got, "\r\n") {
		t.Fatalf("error header %q spans lines", got)
	}
	if want := "terminal: line one line two  line three"; got != want {
		t.Fatalf("error header = %q, want %q", got, want)
	}
}

// TestResourcesOutsideConfigAckedUnhandled: with Resources = sessions, a
// projects event is acked without calling the handler, and the work
// queue empties.
func TestResourcesOutsideConfigAckedUnhandled(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var mu sync.Mutex
	var seen []eventsv1.Resource // guarded by mu
	cfg := testConfig("a")
	cfg.Resources = []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS}
	startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, m.Event.GetResource())
		return nil
	})
	waitMembers(t, js, "a")

	p := &ambientv1.Project{Metadata: &ambientv1.ObjectReference{Id: "p1", UpdatedAt: timestamppb.New(time.Unix(1_700_000_000, 0)), Kind: "Project"}, Name: "p1"}
	msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, p, nil, time.Now()))
	if err != nil {
		t.Fatalf("new msg: %v", err)
	}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatalf("publish project: %v", err)
	}
	publish(t, js, "s1", 1)

	testenv.Eventually(t, 10*time.Second, func() error {
		if n := cfg.Stats.Snapshot().Acked; n != 1 {
			return fmt.Errorf("%d acked, want the session event", n)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != eventsv1.Resource_RESOURCE_SESSIONS {
		t.Fatalf("handler saw resources %v, want only the session", seen)
	}
	if st := cfg.Stats.Snapshot(); st.DeadLettered != 0 || st.InFlight != 0 {
		t.Fatalf("stats = %+v, want nothing dead-lettered or held", st)
	}
}

// TestGroupDeletedStopsRun: deleting the group's config makes Run return
// an error that matches ErrGroupStopped.
func TestGroupDeletedStopsRun(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	a := startMember(t, srv, testConfig("a"), func(context.Context, group.Message) error { return nil })
	waitMembers(t, js, "a")
	if err := pcgroups.DeleteElastic(t.Context(), js, events.StreamName, testGroup); err != nil {
		t.Fatalf("delete group: %v", err)
	}
	select {
	case err := <-a.done:
		a.done <- err // let Cleanup see it too
		if !errors.Is(err, group.ErrGroupStopped) {
			t.Fatalf("Run returned %v, want ErrGroupStopped", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its group was deleted")
	}
}

// TestCoalescedBatchDeadLettersEveryMessage: with Coalesce, a call that
// fails terminally dead-letters every message it stood for, at once (one
// call, N letters), and the work queue empties.
func TestCoalescedBatchDeadLettersEveryMessage(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	started := make(chan struct{}, 1) // v1's call started
	release := make(chan struct{})
	var mu sync.Mutex
	var coalesced []int // Message.Coalesced of each call; guarded by mu
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
		return group.Terminal(errors.New("invalid name"))
	})
	waitMembers(t, js, "a")
	const queued = 5
	queueBehindFirst(t, js, cfg, started, queued)
	close(release)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := cfg.Stats.Snapshot().DeadLettered; n != queued+1 {
			return fmt.Errorf("%d of %d dead-lettered", n, queued+1)
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	letters, err := group.DeadLetters(t.Context(), js, "", testGroup, 0)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	ids := map[string]bool{}
	for _, d := range letters {
		ids[d.Header.Get(group.HeaderDLQOriginalMsgID)] = true
	}
	if len(letters) != queued+1 || len(ids) != queued+1 {
		t.Fatalf("dlq holds %d letters of %d events, want %d of each", len(letters), len(ids), queued+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(coalesced) != fmt.Sprint([]int{0, queued - 1}) {
		t.Fatalf("Message.Coalesced per call = %v, want [0 %d]: one call for the whole batch", coalesced, queued-1)
	}
}

// TestDeadLetteredMessageTerminated: a dead-lettered message is
// terminated, so it leaves the work queue and is never tried again.
func TestDeadLetteredMessageTerminated(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var calls atomic.Int32
	cfg := testConfig("a")
	startMember(t, srv, cfg, func(context.Context, group.Message) error {
		calls.Add(1)
		return errors.New("backend down")
	})
	waitMembers(t, js, "a")
	publish(t, js, "s1", 1)

	testenv.Eventually(t, 10*time.Second, func() error {
		if n := cfg.Stats.Snapshot().DeadLettered; n == 0 {
			return errors.New("not dead-lettered yet")
		}
		return nil
	})
	waitWorkQueue(t, js, 0)
	if letters := dlqMessages(t, js); len(letters) != 1 {
		t.Fatalf("dlq holds %d letters, want 1", len(letters))
	}
	if n := calls.Load(); n > int32(cfg.MaxDeliver) {
		t.Fatalf("handler ran %d times, want at most MaxDeliver %d", n, cfg.MaxDeliver)
	}
	if st := cfg.Stats.Snapshot(); st.DeadLettered != 1 || st.InFlight != 0 {
		t.Fatalf("stats = %+v, want 1 dead letter and nothing held", st)
	}
}
