package app_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/condition"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// createOversized creates a session over the payload limit from its first
// version: its events are reference events, the objects bucket never holds
// it.
func (h *harness) createOversized() string {
	h.t.Helper()
	limit := int(h.js.Conn().MaxPayload())
	big, err := h.c.CreateSession(h.t.Context(), &ambientv1.CreateSessionRequest{Name: "big", ProjectId: proto.String("proj-0000"), Annotations: annotations(limit + limit/2)})
	if err != nil {
		h.t.Fatal(err)
	}
	return big.GetMetadata().GetId()
}

// waitAnnounced waits until session id carries its ObjectTooLarge
// condition and its last event names the API's version of it.
func (h *harness) waitAnnounced(id, what string) {
	h.t.Helper()
	testenv.Eventually(h.t, 30*time.Second, func() error {
		s, err := h.c.GetSession(h.t.Context(), id)
		if err != nil {
			return err
		}
		if !strings.Contains(s.GetConditions(), condition.ReasonTooLarge) {
			return fmt.Errorf("%s: conditions %q lack %s", what, s.GetConditions(), condition.ReasonTooLarge)
		}
		diff.Normalize(s)
		evs, err := h.tryRawEvents(live)
		if err != nil {
			return err
		}
		last := ""
		for _, e := range evs {
			if e.ev.GetObjectId() == id {
				last = e.ev.GetVersion()
			}
		}
		if want := events.VersionOf(s); last != want {
			return fmt.Errorf("%s: last event of the big session at version %q, the API has %q", what, last, want)
		}
		return nil
	})
}

// wantAddedOnce fails unless the events of session id are reference
// events, one ADDED and then MODIFIED ones, none repeating the version of
// the one before. Call it after waitAnnounced of the last change: events
// of one object are published in order, so every event published for an
// earlier version is in the stream by then.
func (h *harness) wantAddedOnce(id string) {
	h.t.Helper()
	var got []string
	prev, failed := "", false
	for _, e := range h.rawEvents(live) {
		if e.ev.GetObjectId() != id {
			continue
		}
		typ, v := events.TypeName(e.ev.GetType()), e.ev.GetVersion()
		got = append(got, typ+" "+v)
		var bad string
		switch {
		case !e.omitted.Object:
			bad = "carries the object"
		case len(got) == 1 && e.ev.GetType() != eventsv1.EventType_EVENT_TYPE_ADDED:
			bad = "is not an ADDED"
		case len(got) > 1 && e.ev.GetType() != eventsv1.EventType_EVENT_TYPE_MODIFIED:
			bad = "is not a MODIFIED"
		case v == prev:
			bad = "repeats the version before it"
		}
		if bad != "" {
			h.t.Errorf("event %d of the big session (%s) %s", len(got), typ, bad)
			failed = true
		}
		prev = v
	}
	if failed {
		h.t.Fatalf("events of the big session:\n%s", strings.Join(got, "\n"))
	}
}

// TestOversizeSessionNotAddedAgain: a session over the payload limit from
// its first version has only reference events and no state in the objects
// bucket, and it changes (its ObjectTooLarge condition, a prompt). When
// leadership moves, by a graceful handover and by a crash right after the
// ack of its reference MODIFIED, the new leader holds no state of it, only
// its last event from the stream's tail. Consumers have the object: the
// new leader publishes nothing while it is the version that event names,
// and a MODIFIED once it changes, never a second ADDED (before the fix:
// an ADDED after each move, "ADDED already present" for consumers).
func TestOversizeSessionNotAddedAgain(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	env := map[string]string{config.EnvLeaseTTL: ttl.String()}
	h := newHarness(t)
	h.seed(2, 1)
	a := h.start("a", env)
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	id := h.createOversized()
	h.waitAnnounced(id, "created under a, condition written")

	// A graceful handover to b.
	var armed atomic.Bool
	crash := func(_ context.Context, ev *eventsv1.ResourceEvent) error {
		if armed.Load() && ev.GetObjectId() == id {
			return errCrash
		}
		return nil
	}
	b := h.start("b", env, app.WithAfterPublish(crash))
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	h.waitLeaderReady(b, 30*time.Second)
	c := h.start("c", env)

	// b publishes the session's change and crashes after its ack; c takes
	// over from the stream's tail.
	armed.Store(true)
	h.updateSession(id, "changed under b")
	if err := b.wait(t, 30*time.Second); !errors.Is(err, errCrash) {
		t.Fatalf("b: Run = %v, want the injected crash", err)
	}
	h.waitLeaderReady(c, 30*time.Second)
	h.waitAnnounced(id, "changed under b, b crashed")
	h.updateSession(id, "changed under c")
	h.waitAnnounced(id, "changed under c")
	wantNoConflicts(t, c, "after taking over from a crashed leader")
	h.wantAddedOnce(id)
}

// TestOversizeSessionNotAddedAgainPastTheTail: the same when the session's
// reference events lie before the stream's tail the new leader reads (a
// tail margin of 2, other sessions changed since): the new leader knows
// nothing of it and publishes an ADDED expecting no event, the stream
// refuses it, and the subject's last event, a reference event, tells the
// leader that consumers have the session and at which version: nothing is
// published for it, then a MODIFIED once it changes.
func TestOversizeSessionNotAddedAgainPastTheTail(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(2, 1)
	a := h.start("a", nil, app.WithTailMargin(2))
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	id := h.createOversized()
	h.waitAnnounced(id, "created under a, condition written")
	for i := range 3 {
		for _, other := range h.sessionIDs() {
			if other != id {
				h.updateSession(other, fmt.Sprintf("change %d", i))
			}
		}
	}
	// KV's position (its entries' highest event sequence) is then past the
	// big session's events by more than the margin.
	testenv.Eventually(t, 30*time.Second, func() error {
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		for _, other := range h.sessionIDs() {
			if got := kv[events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, other)].GetSession().GetPrompt(); other != id && got != "change 2" {
				return fmt.Errorf("kv: session %s at prompt %q", other, got)
			}
		}
		return nil
	})

	b := h.start("b", nil, app.WithTailMargin(2))
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	h.waitLeaderReady(b, 30*time.Second)
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := conflicts(t, b); n != 1 {
			return fmt.Errorf("b counted %v conflicts, want 1 (its ADDED of the big session)", n)
		}
		return nil
	})
	h.updateSession(id, "changed under b")
	h.waitAnnounced(id, "changed under b")
	if n := conflicts(t, b); n != 1 {
		t.Fatalf("b counted %v conflicts, want 1", n)
	}
	if !b.isLeader() {
		t.Fatal("b stood down: its lease was reconfirmed")
	}
	h.wantAddedOnce(id)
}
