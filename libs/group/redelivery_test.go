package group

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestStaleRedeliveryAfterAckNotHandled: a message held past AckWait
// without a renewal (they were lost with a reconnect) is redelivered by the
// server while its handler runs; the lane then acks it, and the server's
// copy arrives after the lane settled it. That copy is acked, not handled a
// second time after the object's later messages. The race libs/group's
// TestUnconfirmedAckNotHandledTwice lost now and then under load ("x
// handled as [1 2 2]"), played here in order: the member's deliveries come
// from Fetch, so the test decides when each copy arrives.
func TestStaleRedeliveryAfterAckNotHandled(t *testing.T) {
	t.Parallel()
	const ackWait = time.Second
	q := newWorkQueue(t, ackWait)
	q.publish(t, "x", 1)
	ctx := t.Context()
	cfg := q.cfg
	var calls atomic.Int32
	started, release := make(chan struct{}, 1), make(chan struct{})
	w := q.worker(t, func(ctx context.Context, _ Message) error {
		if calls.Add(1) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})

	first := q.fetch(t)
	w.deliver(ctx, ctx, first)
	<-started
	// Nothing renews the message (no keepalive here): after AckWait the
	// server sends it again, while the handler still runs.
	again := q.fetch(t)
	if md, _ := again.Metadata(); md == nil || md.NumDelivered != 2 {
		t.Fatalf("second fetch is not the redelivery: %+v", md)
	}
	close(release)
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := cfg.Stats.Snapshot(); st.Acked != 1 || st.InFlight != 0 {
			return fmt.Errorf("acked %d, in flight %d: want the first delivery settled", st.Acked, st.InFlight)
		}
		return nil
	})
	// The copy the server sent before our ack reached it arrives now.
	w.deliver(ctx, ctx, again)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := cfg.Stats.Snapshot().InFlight; n != 0 {
			return errors.New("the redelivery is held")
		}
		return nil
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}

// TestLaneWaitsForOlderLostDelivery: the server sent an object's v1 to a
// subscription that stopped before handing it over (pcgroups re-creating
// the consumer), so the member gets v2 first; v1 comes back only as a
// redelivery. The lane must not handle v2 before v1 (see order.go): it
// finds v1 still in the work-queue stream and waits for it.
func TestLaneWaitsForOlderLostDelivery(t *testing.T) {
	t.Parallel()
	lateOlderHandledFirst(t, func(q *workQueue) { q.publish(t, "x", 2) })
}

// lateOlderHandledFirst delivers the second of the two messages publish
// puts in the work queue, then the first (its redelivery, late), and
// checks the lane handled nothing before the first arrived, then both in
// order.
func lateOlderHandledFirst(t *testing.T, publish func(q *workQueue)) {
	t.Helper()
	q, w, j, v1, v2 := newerFirstOf(t, publish)
	if got := j.snapshot(); len(got) != 0 {
		t.Fatalf("handled %v before v1 arrived", got)
	}
	w.deliver(t.Context(), t.Context(), v1) // the redelivery, late
	q.waitSettled(t, 2)
	j.want(t, v1, v2)
}

// TestLaneGoesOnWhenOlderSettledElsewhere: the older message a lane waits
// for is settled by someone else (the partition's former owner acks it);
// the lane sees it gone from the stream and handles the newer one.
func TestLaneGoesOnWhenOlderSettledElsewhere(t *testing.T) {
	t.Parallel()
	q, _, j, v1, v2 := newerFirst(t)
	if err := v1.DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
	q.waitSettled(t, 1)
	j.want(t, v2)
}

// TestLaneSortsItsQueue: an object's messages that arrive out of order
// while its lane is busy are handled in stream order.
func TestLaneSortsItsQueue(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.publish(t, "x", 4)
	ctx := t.Context()
	var j seqJournal
	release := make(chan struct{})
	w := q.worker(t, func(ctx context.Context, m Message) error {
		if len(j.snapshot()) == 0 {
			select { // v1 holds the lane until the others are filed
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return j.record(ctx, m)
	})
	msgs := []jetstream.Msg{q.fetch(t), q.fetch(t), q.fetch(t), q.fetch(t)}
	for _, i := range []int{0, 3, 1, 2} {
		w.deliver(ctx, ctx, msgs[i])
	}
	close(release)
	q.waitSettled(t, 4)
	j.want(t, msgs...)
	if n := q.cfg.Stats.Snapshot().Reordered; n != 0 {
		t.Fatalf("reordered %d: every older message was held already", n)
	}
}

// TestLaneKeepsWaitingPastTheWindow: a head seen behind an older message
// waits for it even after the window in which a lane looks for losses has
// closed (2 AckWaits), and says so once at 3 AckWaits; the older message
// is due within one AckWait, so a longer wait is worth a warning, not a
// broken order.
func TestLaneKeepsWaitingPastTheWindow(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, MinAckWait)
	q.publish(t, "x", 2)
	var j seqJournal
	var logs testenv.Buffer
	w := q.worker(t, j.record)
	w.log = slog.New(slog.NewTextHandler(&logs, nil))
	v1, v2 := q.fetch(t), q.fetch(t)
	w.deliver(t.Context(), t.Context(), v2)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "event still waits for an older event of its object") {
			return errors.New("no warning about the long wait")
		}
		return nil
	})
	if got := j.snapshot(); len(got) != 0 {
		t.Fatalf("handled %v before v1 arrived", got)
	}
	w.deliver(t.Context(), t.Context(), v1)
	q.waitSettled(t, 2)
	j.want(t, v1, v2)
}

// TestLaneAsksTheStreamOnlyAfterALoss: a lane looks for older messages
// (a round trip per batch) only while a delivery may be missing: not while
// deliveries come one after the other, but after one shows a gap in the
// consumer's numbering or after the group's config was rewritten.
func TestLaneAsksTheStreamOnlyAfterALoss(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.publish(t, "x", 6)
	ctx := t.Context()
	var j seqJournal
	w := q.worker(t, j.record)
	gets := &countingStream{Stream: q.stream}
	w.wq = gets
	var msgs []jetstream.Msg
	for range 4 {
		msgs = append(msgs, q.fetch(t))
	}
	w.deliver(ctx, ctx, msgs[0])
	q.waitSettled(t, 1)
	w.deliver(ctx, ctx, msgs[1])
	q.waitSettled(t, 2)
	if n := gets.n.Load(); n != 0 {
		t.Fatalf("%d lookups for deliveries that follow each other, want 0", n)
	}
	w.deliver(ctx, ctx, msgs[3]) // msgs[2] lost in transit
	q.waitReordered(t, 1)
	w.deliver(ctx, ctx, msgs[2])
	q.waitSettled(t, 4)

	// A rewritten group config (pcgroups re-created the consumer) is a
	// reason to look, too, however the deliveries are numbered.
	w.mu.Lock()
	w.lostAt, w.lastCseq = time.Time{}, 4 // as if nothing had been lost
	w.mu.Unlock()
	w.own.set(w.own.partitions(), 2)
	before := gets.n.Load()
	w.deliver(ctx, ctx, q.fetch(t))
	q.waitSettled(t, 5)
	if gets.n.Load() == before {
		t.Fatal("no lookup after the config was rewritten")
	}
	want := make([]uint64, 0, 5)
	for _, m := range msgs {
		want = append(want, seqOf(t, m))
	}
	if got := j.snapshot(); !slices.Equal(got[:4], want) {
		t.Fatalf("handled seqs %v, want %v first", got, want)
	}
}

// countingStream counts the lookups of older messages.
type countingStream struct {
	jetstream.Stream
	n atomic.Int32
}

func (s *countingStream) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	s.n.Add(1)
	return s.Stream.GetMsg(ctx, seq, opts...)
}

// newerFirst publishes v1 and v2 of one object and delivers v2 alone, as
// if v1 had been lost in transit; it returns once v2 waits for v1.
func newerFirst(t *testing.T) (q *workQueue, w *worker, j *seqJournal, v1, v2 jetstream.Msg) {
	t.Helper()
	return newerFirstOf(t, func(q *workQueue) { q.publish(t, "x", 2) })
}

// newerFirstOf is newerFirst for the two messages publish puts in the
// work queue.
func newerFirstOf(t *testing.T, publish func(q *workQueue)) (q *workQueue, w *worker, j *seqJournal, v1, v2 jetstream.Msg) {
	t.Helper()
	q = newWorkQueue(t, 30*time.Second)
	publish(q)
	j = &seqJournal{}
	w = q.worker(t, j.record)
	v1, v2 = q.fetch(t), q.fetch(t)
	w.deliver(t.Context(), t.Context(), v2)
	q.waitReordered(t, 1)
	return q, w, j, v1, v2
}

// waitSettled waits until n messages are acked and none is held.
func (q *workQueue) waitSettled(t *testing.T, n uint64) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if st := q.cfg.Stats.Snapshot(); st.Acked != n || st.InFlight != 0 {
			return fmt.Errorf("acked %d, in flight %d: want %d settled", st.Acked, st.InFlight, n)
		}
		return nil
	})
}

// waitReordered waits until n messages have waited for an older one.
func (q *workQueue) waitReordered(t *testing.T, n uint64) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := q.cfg.Stats.Snapshot().Reordered; got != n {
			return fmt.Errorf("reordered %d, want %d waiting for an older message", got, n)
		}
		return nil
	})
}

// workQueue is a work-queue stream with one consumer whose deliveries a
// test fetches and hands to a worker itself, so it decides when each
// copy arrives.
type workQueue struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer
	cfg    Config
	own    *ownership
}

func newWorkQueue(t *testing.T, ackWait time.Duration) *workQueue {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WQ", Subjects: []string{events.SubjectPrefix + ".>"},
		Retention: jetstream.WorkQueuePolicy, AllowDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "a", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Config{Group: "g", Member: "a", AckWait: ackWait}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	own := newOwnership()
	all := make([]int, cfg.Partitions)
	for i := range all {
		all[i] = i
	}
	own.set(all, 1)
	return &workQueue{js: js, stream: s, cons: c, cfg: cfg, own: own}
}

// publish adds n events of session id to the stream.
func (q *workQueue) publish(t *testing.T, id string, n int) {
	t.Helper()
	for range n {
		sess := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.Now(), Kind: "Session"}, ProjectId: proto.String("p1")}
		msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, sess, nil, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
	}
}

// fetch returns the consumer's next delivery.
func (q *workQueue) fetch(t *testing.T) jetstream.Msg {
	t.Helper()
	b, err := q.cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		return m
	}
	t.Fatalf("no delivery: %v", b.Error())
	return nil
}

// worker returns a worker on the queue's stream, stopped at the test's
// end. The stream's subjects carry no partition, unlike pcgroups'.
func (q *workQueue) worker(t *testing.T, h Handler) *worker {
	t.Helper()
	w := newWorker(q.cfg, q.js, q.stream, h, q.own, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.wqSubject = func(_ int, subject string) string { return subject }
	t.Cleanup(func() { <-w.gate.close() })
	return w
}

// seqJournal records the stream sequence of every handler call.
type seqJournal struct {
	mu   sync.Mutex
	seqs []uint64
}

func (j *seqJournal) record(_ context.Context, m Message) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seqs = append(j.seqs, m.Seq)
	return nil
}

// want fails t unless the handler saw exactly msgs, in that order.
func (j *seqJournal) want(t *testing.T, msgs ...jetstream.Msg) {
	t.Helper()
	want := make([]uint64, 0, len(msgs))
	for _, m := range msgs {
		want = append(want, seqOf(t, m))
	}
	if got := j.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("handled seqs %v, want %v", got, want)
	}
}

func (j *seqJournal) snapshot() []uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.seqs)
}

func seqOf(t *testing.T, m jetstream.Msg) uint64 {
	t.Helper()
	md, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return md.Sequence.Stream
}

// TestLaneWaitsForLostDeliveryBehindOneSettledHere: the object's oldest
// message in the stream is one this member settled already (v1 handled,
// its ack unconfirmed; or dead-lettered and its Term lost), and v2 was
// lost in transit. v3 must wait for v2: v1 being settled here says
// nothing about the messages between it and the head.
func TestLaneWaitsForLostDeliveryBehindOneSettledHere(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.publish(t, "x", 3)
	var j seqJournal
	w := q.worker(t, j.record)
	v1, v2, v3 := q.fetch(t), q.fetch(t), q.fetch(t)
	w.mu.Lock()
	w.handled[seqOf(t, v1)] = settledHere{at: time.Now()} // handled before, its ack lost
	w.lastCseq = 1
	w.mu.Unlock()
	w.deliver(t.Context(), t.Context(), v3) // v2 lost in transit
	q.waitReordered(t, 1)
	if got := j.snapshot(); len(got) != 0 {
		t.Fatalf("handled %v before v2 arrived", got)
	}
	w.deliver(t.Context(), t.Context(), v2) // the redelivery, late
	q.waitSettled(t, 2)
	j.want(t, v2, v3)
}
