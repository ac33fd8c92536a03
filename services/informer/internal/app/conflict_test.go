package app_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// conflictsMetric counts the events the stream refused because the
// object's last event was not the one the informer expected.
const conflictsMetric = "informer_publish_conflicts_total"

// kvConflictsMetric counts the object KV writes the objects bucket
// refused because the key's last revision was not the expected one.
const kvConflictsMetric = "informer_kv_conflicts_total"

// conflicts returns inf's conflict count; the series must be exported
// (at 0 from the start of a term), or the test fails.
func conflicts(t *testing.T, inf *informer) float64 { return counted(t, inf, conflictsMetric) }

// counted returns the sum of inf's metric name, which must be exported.
func counted(t *testing.T, inf *informer, name string) float64 {
	t.Helper()
	_, body, err := inf.httpGet("/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", inf.name, err)
	}
	n, found := testenv.MetricSum(body, name)
	if !found {
		t.Fatalf("%s exports no %s", inf.name, name)
	}
	return n
}

// wantNoConflicts fails unless inf counted no conflict, of an event or
// of a KV write.
func wantNoConflicts(t *testing.T, inf *informer, when string) {
	t.Helper()
	if n := conflicts(t, inf); n != 0 {
		t.Fatalf("%s: %s counted %v publish conflicts, want 0", when, inf.name, n)
	}
	if n := counted(t, inf, kvConflictsMetric); n != 0 {
		t.Fatalf("%s: %s counted %v kv conflicts, want 0", when, inf.name, n)
	}
}

// lastEvent returns the events stream's last message of session id.
func (h *harness) lastEvent(id string) (*jetstream.RawStreamMsg, *eventsv1.ResourceEvent) {
	h.t.Helper()
	ctx := h.t.Context()
	s, err := h.js.Stream(ctx, live)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, events.SubjectPrefix+".sessions.*."+events.EscapeToken(id))
	if err != nil {
		h.t.Fatalf("last event of %s: %v", id, err)
	}
	_, ev, err := events.Decode(ctx, m.Header, m.Data)
	if err != nil && !errors.Is(err, events.ErrObjectTooLarge) {
		h.t.Fatal(err)
	}
	return m, ev
}

// TestLeadershipMovesWithoutConflicts: every event carries the stream
// sequence of its object's last event, so a new leader must start with the
// right one for every object, from KV's event_seq, from the stream's tail
// (a KV write lost when the old leader crashed) and from a reference event
// of an object KV never held (over the payload limit). Leadership moves
// twice (a crash between an ack and its KV write, then a graceful
// handover), every session changes after each move, and no event is ever
// refused for a wrong sequence.
func TestLeadershipMovesWithoutConflicts(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	env := map[string]string{config.EnvLeaseTTL: ttl.String()}
	h := newHarness(t)
	h.seed(8, 2)
	ids := h.sessionIDs()
	target := ids[3]
	const crashPrompt = "crash after the ack"
	crash := func(_ context.Context, ev *eventsv1.ResourceEvent) error {
		if ev.GetObjectId() == target && ev.GetObject().GetSession().GetPrompt() == crashPrompt {
			return errCrash
		}
		return nil
	}
	a := h.start("a", env, app.WithAfterPublish(crash))
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	b := h.start("b", env)
	updateAll := func(prompt string) {
		for _, id := range h.sessionIDs() {
			if id != target {
				h.updateSession(id, prompt)
			}
		}
	}
	updateAll("changed under a")
	h.deleteSession(ids[7])
	// Over the payload limit: only reference events, KV never holds it.
	// (A project; TestOversizeSessionNotAddedAgain moves leadership over a
	// session, which also gets a condition, a MODIFIED.)
	limit := int(h.js.Conn().MaxPayload())
	projects := h.api.Projects()
	big, err := projects.CreateProject(t.Context(), &ambientv1.CreateProjectRequest{Name: "big", Annotations: annotations(limit + limit/2)})
	if err != nil {
		t.Fatal(err)
	}
	bigID := big.GetMetadata().GetId()
	h.waitEvent(live, 0, "reference ADDED of the big project", func(e rawEvent) bool { return e.ev.GetObjectId() == bigID && e.omitted.Object })
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, ev := h.lastEvent(ids[6]); ev.GetObject().GetSession().GetPrompt() != "changed under a" {
			return errors.New("a's changes not all published yet")
		}
		return nil
	})
	wantNoConflicts(t, a, "first term")

	// a crashes after the ack of target's change, before its KV write: b
	// takes the state and sequence of target from the stream's tail.
	h.updateSession(target, crashPrompt)
	if err := a.wait(t, 30*time.Second); !errors.Is(err, errCrash) {
		t.Fatalf("a: Run = %v, want the injected crash", err)
	}
	h.waitLeaderReady(b, 30*time.Second)
	updateAll("changed under b")
	h.updateSession(target, "changed under b")
	if _, err := projects.UpdateProject(t.Context(), &ambientv1.UpdateProjectRequest{Id: bigID, Description: proto.String("changed under b")}); err != nil {
		t.Fatal(err)
	}
	h.deleteSession(ids[6])
	h.createSession("created under b")
	h.waitEvent(live, 0, "b's change of the big project", func(e rawEvent) bool {
		return e.ev.GetObjectId() == bigID && e.ev.GetType() == eventsv1.EventType_EVENT_TYPE_MODIFIED
	})
	if _, err := projects.DeleteProject(t.Context(), &ambientv1.DeleteProjectRequest{Id: bigID}); err != nil {
		t.Fatal(err)
	}
	h.waitConverged(live, bucket, 30*time.Second)
	wantNoConflicts(t, b, "after taking over from a crashed leader")

	// A graceful handover: b releases the lease, c takes it at once.
	c := h.start("c", env)
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	h.waitLeaderReady(c, 30*time.Second)
	updateAll("changed under c")
	h.updateSession(target, "changed under c")
	h.deleteSession(ids[0])
	h.createSession("created under c")
	h.waitConverged(live, bucket, 30*time.Second)
	wantNoConflicts(t, c, "after a graceful handover")
	if got := c.metric("informer_events_published_total", `type="MODIFIED"`); got < float64(len(ids)-3) {
		t.Fatalf("c published %v MODIFIED events, want every session's change", got)
	}
}

// TestPurgedSubjectPublishedAfterReconfirm: the events of an object are
// gone from the stream while this replica leads (aged out by the stream's
// MaxAge, purged): its next event, which expects the last one's sequence,
// is refused; the leader reconfirms its lease, finds the subject empty and
// publishes the event after all, and stays leader.
func TestPurgedSubjectPublishedAfterReconfirm(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(nil)
	wantNoConflicts(t, a, "initial sync")
	x := h.sessionIDs()[0]
	s, err := h.js.Stream(t.Context(), live)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(t.Context(), jetstream.WithPurgeSubject(events.SubjectPrefix+".sessions.*."+events.EscapeToken(x))); err != nil {
		t.Fatal(err)
	}
	const prompt = "changed after its events were purged"
	h.updateSession(x, prompt)
	h.waitEvent(live, 0, "the change after the purge", func(e rawEvent) bool {
		return e.ev.GetObjectId() == x && e.ev.GetObject().GetSession().GetPrompt() == prompt
	})
	if n := conflicts(t, a); n != 1 {
		t.Fatalf("conflicts = %v, want 1", n)
	}
	if !a.isLeader() {
		t.Fatal("a stood down: its lease was reconfirmed")
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		got := h.kvObjects(bucket)[events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, x)].GetSession().GetPrompt()
		if got != prompt {
			return fmt.Errorf("kv prompt %q", got)
		}
		return nil
	})
}

// TestForeignEventAdopted: the stream's last event of an object is
// another publisher's (a previous leader's late event, which expected the
// right sequence and so got through): the leader's next event of that
// object is refused, and after reconfirming its lease the leader takes
// that event as what consumers saw last and publishes the change from
// there: a MODIFIED whose old object is the foreign event's (the replay
// checks it), not a second copy of a change diffed against a state
// consumers no longer hold.
func TestForeignEventAdopted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.startSyncedLeader(nil)
	x := h.sessionIDs()[0]
	last, ev := h.lastEvent(x)
	cur := ev.GetObject().GetSession()
	foreign := proto.CloneOf(cur)
	foreign.Prompt = proto.String("a previous leader's late change")
	foreign.Metadata.UpdatedAt = timestamppb.New(cur.GetMetadata().GetUpdatedAt().AsTime().Add(time.Millisecond))
	msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, foreign, cur, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(t.Context(), msg, jetstream.WithExpectLastSequencePerSubject(last.Sequence)); err != nil {
		t.Fatal(err)
	}
	h.updateSession(x, "changed after the foreign event")
	h.waitConverged(live, bucket, 30*time.Second)
	if n := conflicts(t, a); n != 1 {
		t.Fatalf("conflicts = %v, want 1", n)
	}
	if !a.isLeader() {
		t.Fatal("a stood down: its lease was reconfirmed")
	}
}
