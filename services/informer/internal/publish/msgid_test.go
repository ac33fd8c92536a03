package publish

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// setupCluster is setup on a replicated stream and bucket of a 3-server
// cluster, which checks Nats-Msg-Id before the expected sequence.
func setupCluster(t *testing.T) (*Publisher, jetstream.JetStream) {
	t.Helper()
	c := testenv.NewNATSCluster(t, 3)
	first := c.Start(0)
	c.Start(1)
	c.Start(2)
	_, js := testenv.JetStream(t, first)
	// A cluster's JetStream answers once its meta leader is elected.
	testenv.Eventually(t, time.Minute, func() error {
		_, err := js.CreateOrUpdateStream(t.Context(), jetstream.StreamConfig{Name: "EV", Subjects: []string{"ev.>"}, Replicas: 3})
		return err
	})
	kv, err := js.CreateKeyValue(t.Context(), bus.ObjectsBucket(3))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV"})
	if err != nil {
		t.Fatal(err)
	}
	return p, js
}

// TestStateThatComesBackIsPublishedAgain: the API goes back to a state the
// object had before, byte for byte (a restore of its database, an update
// that sets back the content and updated_at of an earlier version), within
// the stream's duplicate window. Consumers hold the newer state: the event
// must land, not be taken for a duplicate of the first event of that
// state. A retry of that very publish (its ack lost) is still recognized
// as the same event: a cluster answers it with a duplicate ack, a single
// server refuses it and Publish finds it as the subject's last.
func TestStateThatComesBackIsPublishedAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (*Publisher, jetstream.JetStream)
	}{
		{name: "single server", setup: func(t *testing.T) (*Publisher, jetstream.JetStream) {
			p, _, js := setup(t, 0, 0)
			return p, js
		}},
		{name: "3-server cluster", setup: setupCluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, js := tc.setup(t)
			countReconfirms(p)
			var duplicates atomic.Int64
			p.cfg.Observe = func(_ context.Context, _ eventsv1.Resource, _ eventsv1.EventType, _ time.Duration, dup bool) {
				if dup {
					duplicates.Add(1)
				}
			}
			ctx := t.Context()
			v0, v1, v2 := versioned("x", "v0", 100), versioned("x", "v1", 200), versioned("x", "v2", 300)
			var seq uint64
			publish := func(c diff.Change[*ambientv1.Session]) Outcome {
				t.Helper()
				out, err := Publish(ctx, p, revsOf(p), c)
				if err != nil {
					t.Fatal(err)
				}
				if out.KV != nil {
					if err := out.KV.Wait(ctx); err != nil {
						t.Fatal(err)
					}
				}
				return out
			}
			seq = publish(change(t, eventsv1.EventType_EVENT_TYPE_ADDED, v0)).Seq
			seq = publish(modified(t, v0, v1, seq)).Seq
			seq = publish(modified(t, v1, v2, seq)).Seq
			back := modified(t, v2, v1, seq)
			out := publish(back)
			msgs, last := streamMsgs(t, js, subjectX)
			if out.LostAck || duplicates.Load() != 0 || msgs != 4 || last.Sequence != out.Seq || promptOf(t, last) != "v1" {
				t.Fatalf("v1 again after v2: %+v, %d duplicate acks; stream holds %d messages, x's last %q at %d; want a 4th message, v1",
					out, duplicates.Load(), msgs, promptOf(t, last), last.Sequence)
			}
			if got, want := last.Header.Get(events.HeaderMsgID), MsgID(eventIDOf(back), seq); got != want {
				t.Fatalf("Nats-Msg-Id %q, want %q", got, want)
			}

			again := publish(back) // the ack of the last publish was lost
			msgs, _ = streamMsgs(t, js, subjectX)
			if again.Seq != out.Seq || msgs != 4 || duplicates.Load() != 1 {
				t.Fatalf("retry of v1: %+v, %d duplicate acks; stream holds %d messages; want it recognized at %d, no 5th message",
					again, duplicates.Load(), msgs, out.Seq)
			}
		})
	}
}

// eventIDOf is the event id (events.MsgID) of session x's change c.
func eventIDOf(c diff.Change[*ambientv1.Session]) string {
	return events.MsgID(&eventsv1.ResourceEvent{Resource: eventsv1.Resource_RESOURCE_SESSIONS, ObjectId: c.ID, Type: c.Type, Version: c.Version()})
}

// TestBudgetCountsTheMsgIDSuffix: the Nats-Msg-Id carries the expected
// sequence after the event id (MsgID), which the event's own size does not
// count: an event that fits the limit only with the bare event id is
// trimmed (the old object goes) instead of being refused by the client as
// over the limit, which would make its version unpublishable.
func TestBudgetCountsTheMsgIDSuffix(t *testing.T) {
	t.Parallel()
	p, _, js := setup(t, 0, time.Second)
	ctx := t.Context()
	limit := p.limit()
	// Other messages first: x's first event lands at 100, so the suffix
	// its next event's id gets ("/100") is 4 bytes, more than the 1 byte
	// the event's own size varies by (its observed time).
	for i := range 99 {
		if _, err := js.PublishMsg(ctx, withID("ev.pad", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	old := versioned("x", "v1", 100)
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, old))
	if err != nil || out.Seq != 100 {
		t.Fatalf("first event: %+v, %v; want it at 100", out, err)
	}
	// Grow the new state until the message with both expectation headers
	// and the bare event id is 2 bytes under the limit: it fits without
	// the suffix, not with it.
	headers := headerSize(jetstream.ExpectedStreamHeader, "EV") + headerSize(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(out.Seq, 10))
	var c diff.Change[*ambientv1.Session]
	size := func(n int) int {
		c = modified(t, old, versioned("x", strings.Repeat("p", n), 200), out.Seq)
		data, id := events.MarshalEvent[*ambientv1.Session](c.Type, c.ID, c.New, c.Old, time.Now())
		return events.PayloadSize(events.NewMsgData(ctx, subjectX, id, data)) + headers
	}
	n := limit - 2000
	for range 10 {
		d := limit - 2 - size(n)
		if d == 0 {
			break
		}
		n += d
	}
	if got := size(n); got < limit-2 || got > limit-1 {
		t.Fatalf("could not size the event: %d bytes for a limit of %d", got, limit)
	}
	got, err := Publish(ctx, p, revsOf(p), c)
	if err != nil {
		t.Fatalf("publish of an event that fits only with the bare event id: %v", err)
	}
	if !got.Omitted.OldObject {
		t.Fatalf("omitted %+v, want the old object left out", got.Omitted)
	}
	if _, last := streamMsgs(t, js, subjectX); last == nil || last.Sequence != got.Seq || last.Header.Get(events.HeaderMsgID) != MsgID(eventIDOf(c), out.Seq) {
		t.Fatalf("last message %v, want the trimmed MODIFIED at %d with its Nats-Msg-Id", last, got.Seq)
	}
}
