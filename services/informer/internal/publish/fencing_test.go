package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
)

// subjectX is the subject of session x's events (no project).
var subjectX = events.Subject("ev", eventsv1.Resource_RESOURCE_SESSIONS, "", "x")

// apiCode returns the JetStream API error code of err (0: none).
func apiCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}

// withID is a message on subject with the Nats-Msg-Id id.
func withID(subject, id string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Data = []byte(id)
	return m
}

// TestServerExpectedLastSubjectSeq pins down what Publish relies on, on a
// single server and on a replicated stream of a 3-server cluster:
//   - an expected last subject sequence of 0 means "no message on the
//     subject", and is enforced (an object's first event);
//   - a publish retried after a lost ack, with the same Nats-Msg-Id and
//     the same (now stale) expectation: a cluster checks the msg id first
//     and answers with a duplicate ack; a single server checks the
//     expectation first and refuses it as a wrong last sequence.
//     Publisher.conflict recognizes its own event in that case.
func TestServerExpectedLastSubjectSeq(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		connect   func(t *testing.T) jetstream.JetStream
		replicas  int
		duplicate bool // a retried publish gets a duplicate ack
	}{
		{name: "single server", replicas: 1, connect: func(t *testing.T) jetstream.JetStream {
			_, js := testenv.JetStream(t, testenv.NATS(t))
			return js
		}},
		{name: "3-server cluster", replicas: 3, duplicate: true, connect: func(t *testing.T) jetstream.JetStream {
			c := testenv.NewNATSCluster(t, 3)
			first := c.Start(0)
			c.Start(1)
			c.Start(2)
			_, js := testenv.JetStream(t, first)
			return js
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := tc.connect(t)
			// A cluster's JetStream answers once its meta leader is elected.
			testenv.Eventually(t, time.Minute, func() error {
				_, err := js.CreateOrUpdateStream(t.Context(), jetstream.StreamConfig{Name: "EV", Subjects: []string{"ev.>"}, Replicas: tc.replicas})
				return err
			})
			ctx := t.Context()
			first, err := js.PublishMsg(ctx, withID("ev.x", "x-1"), jetstream.WithExpectLastSequencePerSubject(0))
			if err != nil {
				t.Fatalf("first message of the subject expecting 0: %v", err)
			}
			if _, err := js.PublishMsg(ctx, withID("ev.x", "x-2"), jetstream.WithExpectLastSequencePerSubject(0)); !wrongLastSeq(err) {
				t.Fatalf("second message expecting 0: err = %v, want wrong last sequence", err)
			}
			if _, err := js.PublishMsg(ctx, withID("ev.y", "y-1"), jetstream.WithExpectLastSequencePerSubject(0)); err != nil {
				t.Fatalf("another subject expecting 0: %v", err)
			}
			retried, err := js.PublishMsg(ctx, withID("ev.x", "x-1"), jetstream.WithExpectLastSequencePerSubject(0))
			switch {
			case tc.duplicate && (err != nil || !retried.Duplicate || retried.Sequence != first.Sequence):
				t.Fatalf("retried publish: %+v, %v; want a duplicate ack of sequence %d", retried, err, first.Sequence)
			case !tc.duplicate && !wrongLastSeq(err):
				t.Fatalf("retried publish: %+v, %v (code %d); want wrong last sequence", retried, err, apiCode(err))
			}
			next, err := js.PublishMsg(ctx, withID("ev.x", "x-2"), jetstream.WithExpectLastSequencePerSubject(first.Sequence))
			if err != nil || next.Duplicate {
				t.Fatalf("next message expecting the first: %+v, %v", next, err)
			}
		})
	}
}

// streamMsgs returns how many messages stream EV holds and the last one
// on subject.
func streamMsgs(t *testing.T, js jetstream.JetStream, subject string) (uint64, *jetstream.RawStreamMsg) {
	t.Helper()
	s, err := js.Stream(t.Context(), "EV")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(t.Context(), subject)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatal(err)
	}
	return info.State.Msgs, last
}

// promptOf decodes the session event m carries and returns its prompt.
func promptOf(t *testing.T, m *jetstream.RawStreamMsg) string {
	t.Helper()
	_, ev, err := events.Decode(t.Context(), m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return ev.GetObject().GetSession().GetPrompt()
}

// versioned is session id with prompt p, updated at second sec.
func versioned(id, p string, sec int64) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.Unix(sec, 0))},
		Name:     "s", Prompt: proto.String(p),
	}
}

func modified(t *testing.T, old, cur *ambientv1.Session, seq uint64) diff.Change[*ambientv1.Session] {
	t.Helper()
	c := change(t, eventsv1.EventType_EVENT_TYPE_MODIFIED, cur)
	c.Old, c.Seq = change(t, eventsv1.EventType_EVENT_TYPE_ADDED, old).New, seq
	return c
}

// term is one elector's lease term, run in the background.
type term struct {
	e    *lease.Elector
	lost chan error // the cause of the term's end when it was lost
}

// leasesBucket creates the lease bucket the tests' electors campaign in.
func leasesBucket(t *testing.T, js jetstream.JetStream, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	leases, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return leases
}

// countReconfirms makes p's lease always reconfirm, counting the calls.
func countReconfirms(p *Publisher) *atomic.Int64 {
	var n atomic.Int64
	p.cfg.Reconfirm = func(context.Context) error {
		n.Add(1)
		return nil
	}
	return &n
}

// campaign runs an elector for holder until the test ends.
func campaign(t *testing.T, kv jetstream.KeyValue, holder string, ttl time.Duration) *term {
	t.Helper()
	e, err := lease.New(kv, lease.Config{Key: "informer", Holder: holder, TTL: ttl, RenewEvery: ttl / 2}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tm := &term{e: e, lost: make(chan error, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Owned by the test: cancelled and awaited in Cleanup.
	go func() {
		done <- e.Run(ctx, func(ctx context.Context) error {
			<-ctx.Done()
			if cause := context.Cause(ctx); errors.Is(cause, lease.ErrLost) {
				tm.lost <- cause
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("elector %s: %v", holder, err)
		}
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if !e.IsLeader() {
			return fmt.Errorf("%s does not lead", holder)
		}
		return nil
	})
	return tm
}

// TestStaleLeaderRefused is the pause the client-side fence cannot cover:
// leader A holds object X at sequence s; its process is paused after its
// Fence check and before the send of X's next event, longer than the
// lease TTL; B takes the lease over and publishes a newer X; A resumes and
// sends its stale event. The stream must refuse it (the event expects s,
// the subject's last is B's), keep B's event last, and A must learn that it
// lost the lease (Reconfirm's write fails) and stand down.
func TestStaleLeaderRefused(t *testing.T) {
	t.Parallel()
	// Long enough that no renewal of A's notices the takeover first.
	const ttl = 30 * time.Second
	_, kv, js := setup(t, 0, time.Second)
	leases := leasesBucket(t, js, ttl)
	publisher := func(tm *term) *Publisher {
		p, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", Fence: tm.e.Confirmed, Reconfirm: tm.e.Reconfirm})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := t.Context()
	a := campaign(t, leases, "a", ttl)
	pa := publisher(a)
	v1, v2, v3 := versioned("x", "v1", 100), versioned("x", "v2: A's, stale", 200), versioned("x", "v3: B's", 300)
	out, err := Publish(ctx, pa, revsOf(pa), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v1))
	if err != nil {
		t.Fatal(err)
	}
	s := out.Seq // A's view of X: v1 at s

	// A is paused past its lease: the key expires (purged here) and B,
	// which loaded X at s from KV, takes over and publishes v3.
	if err := leases.Purge(ctx, "informer"); err != nil {
		t.Fatal(err)
	}
	b := campaign(t, leases, "b", ttl)
	pb := publisher(b)
	if _, err := Publish(ctx, pb, revsOf(pb), modified(t, v1, v3, s)); err != nil {
		t.Fatalf("B's publish: %v", err)
	}
	msgs, last := streamMsgs(t, js, subjectX)

	// A resumes right after its Fence check: the event goes out unfenced.
	pa.cfg.Fence = nil
	_, err = Publish(ctx, pa, revsOf(pa), modified(t, v1, v2, s))
	if !errors.Is(err, ErrConflict) || !errors.Is(err, lease.ErrLost) {
		t.Fatalf("A's stale publish: err = %v, want ErrConflict and lease.ErrLost", err)
	}
	after, lastAfter := streamMsgs(t, js, subjectX)
	if after != msgs || lastAfter.Sequence != last.Sequence || promptOf(t, lastAfter) != "v3: B's" {
		t.Fatalf("stream after A's stale publish: %d messages, X's last %q at %d; want %d messages, B's v3 at %d still last",
			after, promptOf(t, lastAfter), lastAfter.Sequence, msgs, last.Sequence)
	}
	select {
	case cause := <-a.lost:
		t.Logf("A stood down: %v", cause)
	case <-time.After(10 * time.Second):
		t.Fatal("A's term did not end after its stale publish was refused")
	}
	if a.e.IsLeader() || !b.e.IsLeader() {
		t.Fatalf("a leads %v, b leads %v; want b alone", a.e.IsLeader(), b.e.IsLeader())
	}
}

// TestLostAckCountsAsPublished: an event published again because its ack
// was lost (the change still expects the sequence before it) is found as
// the subject's last event: counted as published at its sequence, with no
// second message and no error, after one reconfirmation of the lease.
func TestLostAckCountsAsPublished(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	reconfirms := countReconfirms(p)
	var duplicates atomic.Int64
	p.cfg.Observe = func(_ context.Context, _ eventsv1.Resource, _ eventsv1.EventType, _ time.Duration, dup bool) {
		if dup {
			duplicates.Add(1)
		}
	}
	ctx := t.Context()
	for _, c := range []diff.Change[*ambientv1.Session]{
		change(t, eventsv1.EventType_EVENT_TYPE_ADDED, session("x", 10)),
		modified(t, session("x", 10), versioned("x", "v2", 200), 1),
	} {
		first, err := Publish(ctx, p, revsOf(p), c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Publish(ctx, p, revsOf(p), c) // the ack of first was lost
		if err != nil || !again.LostAck || again.Seq != first.Seq {
			t.Fatalf("%v published again: %+v, %v; want a lost ack at %d", c.Type, again, err, first.Seq)
		}
		if again.KV == nil {
			t.Fatal("no KV write after a lost ack")
		}
	}
	if msgs, _ := streamMsgs(t, js, subjectX); msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", msgs)
	}
	if reconfirms.Load() != 2 || duplicates.Load() != 2 {
		t.Fatalf("%d reconfirmations, %d duplicates; want 2 each", reconfirms.Load(), duplicates.Load())
	}
}

// TestPurgedSubjectPublishedAfterReconfirm: the object's events are gone
// from the stream (aged out by MaxAge or MaxMsgsPerSubject, purged) while
// this replica leads: the stream refuses the event, which expects the
// last one's sequence; the lease is reconfirmed (one write), the subject
// reads as empty (ConflictError at 0), and the event expecting 0 goes out.
func TestPurgedSubjectPublishedAfterReconfirm(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Second
	p, _, js := setup(t, 0, time.Second)
	leases := leasesBucket(t, js, ttl)
	tm := campaign(t, leases, "a", ttl)
	p.cfg.Fence, p.cfg.Reconfirm = tm.e.Confirmed, tm.e.Reconfirm
	ctx := t.Context()
	v1, v2 := versioned("x", "v1", 100), versioned("x", "v2", 200)
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v1))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "EV")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subjectX)); err != nil {
		t.Fatal(err)
	}
	rev, err := leases.Get(ctx, "informer")
	if err != nil {
		t.Fatal(err)
	}
	c := modified(t, v1, v2, out.Seq)
	_, err = Publish(ctx, p, revsOf(p), c)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Last != 0 || conflict.Expected != out.Seq {
		t.Fatalf("publish after the purge: err = %v, want a ConflictError at 0", err)
	}
	if last := Last[*ambientv1.Session](conflict, "x"); last.Kind != LastUnknown {
		t.Fatalf("Last of an empty subject: %+v, want LastUnknown", last)
	}
	if now, err := leases.Get(ctx, "informer"); err != nil || now.Revision() != rev.Revision()+1 {
		t.Fatalf("lease revision %v (%v) after the conflict, want %d: one reconfirming write", now, err, rev.Revision()+1)
	}
	c.Seq = conflict.Last // what the controller does (Store.AdoptSeq)
	again, err := Publish(ctx, p, revsOf(p), c)
	if err != nil || again.LostAck {
		t.Fatalf("publish expecting the empty subject: %+v, %v", again, err)
	}
	if _, last := streamMsgs(t, js, subjectX); last == nil || last.Sequence != again.Seq || promptOf(t, last) != "v2" {
		t.Fatalf("subject's last message %v, want v2 at %d", last, again.Seq)
	}
	if !tm.e.IsLeader() {
		t.Fatal("the leader stood down")
	}
}

// TestConflictWithAnotherPublishersEvent: the subject's last event is
// another publisher's (a previous leader's late event, which expected the
// right sequence): after the reconfirmation Publish returns it as a
// ConflictError, whose Last is the state it published (for the
// caller to adopt), or the delete.
func TestConflictWithAnotherPublishersEvent(t *testing.T) {
	t.Parallel()
	p, kv, js := setup(t, 0, time.Second)
	p.cfg.Reconfirm = func(context.Context) error { return nil }
	// Another leader: its KV writes settle their refusals too (it knows
	// none of the bucket's revisions).
	other, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", Reconfirm: p.cfg.Reconfirm})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	v1, foreign, v3 := versioned("x", "v1", 100), versioned("x", "foreign", 200), versioned("x", "v3", 300)
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v1))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := Publish(ctx, other, revsOf(other), modified(t, v1, foreign, out.Seq))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Publish(ctx, p, revsOf(p), modified(t, v1, v3, out.Seq))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Last != theirs.Seq {
		t.Fatalf("err = %v, want a ConflictError at %d", err, theirs.Seq)
	}
	last := Last[*ambientv1.Session](conflict, "x")
	if want := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, foreign).New; last.Kind != LastPresent || !last.State.SameVersion(want) {
		t.Fatalf("Last = kind %v version %v, want the foreign state", last.Kind, last.State.Version())
	}
	if last := Last[*ambientv1.Session](conflict, "other-id"); last.Kind != LastUnknown {
		t.Fatalf("Last for another object: %+v, want LastUnknown", last)
	}

	del := change(t, eventsv1.EventType_EVENT_TYPE_DELETED, foreign)
	del.Seq = theirs.Seq
	gone, err := Publish(ctx, other, revsOf(other), del)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Publish(ctx, p, revsOf(p), modified(t, foreign, v3, theirs.Seq))
	if !errors.As(err, &conflict) || conflict.Last != gone.Seq {
		t.Fatalf("err = %v, want a ConflictError at %d", err, gone.Seq)
	}
	if last := Last[*ambientv1.Session](conflict, "x"); last.Kind != LastDeleted {
		t.Fatalf("Last after a DELETED: %+v, want LastDeleted", last)
	}
}

// TestConflictWithoutReconfirm: without Config.Reconfirm a refused event
// is returned as ErrConflict, and nothing is read or published.
func TestConflictWithoutReconfirm(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	ctx := t.Context()
	c := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, session("x", 10))
	if _, err := Publish(ctx, p, revsOf(p), c); err != nil {
		t.Fatal(err)
	}
	_, err := Publish(ctx, p, revsOf(p), c)
	var conflict *ConflictError
	if !errors.Is(err, ErrConflict) || errors.As(err, &conflict) {
		t.Fatalf("err = %v, want ErrConflict without a ConflictError", err)
	}
	if msgs, _ := streamMsgs(t, js, subjectX); msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", msgs)
	}
}

// TestBudgetCountsTheExpectedSeqHeader: the expected-sequence header is
// added after the message is built, so the payload budget must leave room
// for it: an event that fits the limit only without it is trimmed (the old
// object goes) instead of being refused by the client as over the limit.
func TestBudgetCountsTheExpectedSeqHeader(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	ctx := t.Context()
	limit := p.limit()
	old := versioned("x", "v1", 100)
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, old))
	if err != nil {
		t.Fatal(err)
	}
	// Grow the new state until the message with the stream header (but
	// without the sequence header, 45 bytes here) is 20 bytes under the
	// limit.
	streamHeader := headerSize(jetstream.ExpectedStreamHeader, "EV")
	var c diff.Change[*ambientv1.Session]
	size := func(n int) int {
		c = modified(t, old, versioned("x", strings.Repeat("p", n), 200), out.Seq)
		data, id := events.MarshalEvent[*ambientv1.Session](c.Type, c.ID, c.New, c.Old, time.Now())
		return events.PayloadSize(events.NewMsgData(ctx, subjectX, id, data)) + streamHeader
	}
	n := limit - 2000
	for range 10 {
		d := limit - 20 - size(n)
		if d == 0 {
			break
		}
		n += d
	}
	if got := size(n); got < limit-24 || got > limit-16 {
		t.Fatalf("could not size the event: %d bytes for a limit of %d", got, limit)
	}
	if seqHeader := headerSize(jetstream.ExpectedLastSubjSeqHeader, "1"); seqHeader <= 24 {
		t.Fatalf("the sequence header is %d bytes: the test needs more than 24", seqHeader)
	}
	got, err := Publish(ctx, p, revsOf(p), c)
	if err != nil {
		t.Fatalf("publish of an event that fits only without the sequence header: %v", err)
	}
	if !got.Omitted.OldObject {
		t.Fatalf("omitted %+v, want the old object left out", got.Omitted)
	}
	if _, last := streamMsgs(t, js, subjectX); last == nil || last.Sequence != got.Seq {
		t.Fatalf("last message %v, want the trimmed MODIFIED at %d", last, got.Seq)
	}
}

// TestReplayedDeadLetterTellsNoState: a dead letter replayed for one
// consumer group (libs/group.Replay) is a copy of an older event on the
// object's subject: it becomes the subject's last message, so the next
// event must follow it, but it changes no state. Tail keeps the state of
// the event before it with the replay's sequence, and Last tells no
// state of it (LastRef without a version).
func TestReplayedDeadLetterTellsNoState(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	p.cfg.Reconfirm = func(context.Context) error { return nil }
	ctx := t.Context()
	v1, v2, v3 := versioned("x", "v1", 100), versioned("x", "v2", 200), versioned("x", "v3", 300)
	added, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v1))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Publish(ctx, p, revsOf(p), modified(t, v1, v2, added.Seq))
	if err != nil {
		t.Fatal(err)
	}
	// The ADDED, dead-lettered by a group and replayed.
	replayAck := replayDeadLetter(t, js, added.Seq)

	tail, err := Tail[*ambientv1.Session](ctx, p, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v2).New
	if got, ok := tail["x"]; !ok || got.Ref || got.Deleted || got.Seq != replayAck.Sequence || events.VersionOf(got.Object) != want.Version() {
		t.Fatalf("tail of x = %+v, want v2 (%s) at the replay's sequence %d", got, want.Version(), replayAck.Sequence)
	}

	_, err = Publish(ctx, p, revsOf(p), modified(t, v2, v3, out.Seq))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Last != replayAck.Sequence {
		t.Fatalf("err = %v, want a ConflictError at the replay's sequence %d", err, replayAck.Sequence)
	}
	if last := Last[*ambientv1.Session](conflict, "x"); last.Kind != LastRef || last.Version != "" {
		t.Fatalf("Last of a replayed dead letter: %+v, want LastRef without a version", last)
	}
	if _, err := Publish(ctx, p, revsOf(p), modified(t, v2, v3, conflict.Last)); err != nil {
		t.Fatalf("publish after the replay: %v", err)
	}
}

// TestReferenceEventTellsItsVersion: a reference event (an object over the
// payload limit) tells no state, but that consumers have the object and at
// which version: Tail and Last (LastRef) return the version it names, so that a
// new leader does not publish the object as ADDED again (nor at all while
// it is that version). A replayed dead letter tells the object exists, not
// its version.
func TestReferenceEventTellsItsVersion(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	p.cfg.Reconfirm = func(context.Context) error { return nil }
	ctx := t.Context()
	big := versioned("x", strings.Repeat("p", 2*p.limit()), 100)
	added := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, big)
	out, err := Publish(ctx, p, revsOf(p), added)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Omitted.Object {
		t.Fatalf("omitted %+v, want a reference event", out.Omitted)
	}
	tail, err := Tail[*ambientv1.Session](ctx, p, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := tail["x"]; !got.Ref || got.Version != added.Version() || got.Seq != out.Seq {
		t.Fatalf("tail of x = %+v, want a reference of %s at %d", got, added.Version(), out.Seq)
	}

	// A leader without that tail publishes an ADDED expecting nothing.
	_, err = Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, versioned("x", "small", 200)))
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Last != out.Seq {
		t.Fatalf("err = %v, want a ConflictError at the reference's sequence %d", err, out.Seq)
	}
	if last := Last[*ambientv1.Session](conflict, "x"); last.Kind != LastRef || last.Version != added.Version() {
		t.Fatalf("Last = %+v, want LastRef of %s", last, added.Version())
	}
	if last := Last[*ambientv1.Session](conflict, "other-id"); last.Kind != LastUnknown {
		t.Fatalf("Last for another object: %+v, want LastUnknown", last)
	}

	// The reference, dead-lettered by a group and replayed.
	replayAck := replayDeadLetter(t, js, out.Seq)
	_, err = Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, versioned("x", "small", 200)))
	if !errors.As(err, &conflict) || conflict.Last != replayAck.Sequence {
		t.Fatalf("err = %v, want a ConflictError at the replay's sequence %d", err, replayAck.Sequence)
	}
	if last := Last[*ambientv1.Session](conflict, "x"); last.Kind != LastRef || last.Version != "" {
		t.Fatalf("Last of a replayed reference: %+v, want LastRef without a version", last)
	}
}

// replayDeadLetter publishes the events stream's (EV) message seq again on
// its subject, as group.Replay builds a dead letter replayed for group
// "g": its headers but JetStream's own, the replay header, a msg id of
// its own.
func replayDeadLetter(t *testing.T, js jetstream.JetStream, seq uint64) *jetstream.PubAck {
	t.Helper()
	s, err := js.Stream(t.Context(), "EV")
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatal(err)
	}
	replay := nats.NewMsg(first.Subject)
	replay.Data = first.Data
	for k, v := range first.Header {
		if !strings.HasPrefix(k, "Nats-") {
			replay.Header[k] = v
		}
	}
	replay.Header.Set(group.HeaderReplayGroup, "g")
	replay.Header.Set(jetstream.MsgIDHeader, "replay/DLQ/1")
	ack, err := js.PublishMsg(t.Context(), replay)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}
