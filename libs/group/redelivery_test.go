package group

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx := t.Context()
	const ackWait = time.Second
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WQ", Subjects: []string{events.SubjectPrefix + ".>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "a", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	sess := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "x", UpdatedAt: timestamppb.Now(), Kind: "Session"}, ProjectId: proto.String("p1")}
	msg, err := events.NewMsg(ctx, events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, sess, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
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
	var calls atomic.Int32
	started, release := make(chan struct{}, 1), make(chan struct{})
	w := newWorker(cfg, js, func(ctx context.Context, _ Message) error {
		if calls.Add(1) == 1 {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}, own, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer func() { <-w.gate.close() }()

	fetch := func() jetstream.Msg {
		t.Helper()
		b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			return m
		}
		t.Fatalf("no delivery: %v", b.Error())
		return nil
	}
	first := fetch()
	w.deliver(ctx, ctx, first)
	<-started
	// Nothing renews the message (no keepalive here): after AckWait the
	// server sends it again, while the handler still runs.
	again := fetch()
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
