package publish

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/diff"
)

// setup returns a Publisher on an embedded server: stream "EV" on prefix
// "ev" (maxMsg bytes per message, 0: no limit) and a bucket whose delete
// markers may expire.
func setup(t *testing.T, maxMsg int32, markerTTL time.Duration) (*Publisher, jetstream.KeyValue, jetstream.JetStream) {
	t.Helper()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EV", Subjects: []string{"ev.>"}, MaxMsgSize: maxMsg}); err != nil {
		t.Fatal(err)
	}
	cfg := bus.ObjectsBucket(1)
	cfg.LimitMarkerTTL = markerTTL
	kv, err := js.CreateKeyValue(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev", Stream: "EV", MarkerTTL: markerTTL})
	if err != nil {
		t.Fatal(err)
	}
	return p, kv, js
}

// memRevs keeps the revisions of one publisher's KV entries in tests, as
// diff.Store does in a term.
type memRevs struct {
	mu   sync.Mutex
	revs map[string]uint64
}

func (m *memRevs) KVRev(id string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revs[id]
}

func (m *memRevs) SetKVRev(id string, rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.revs == nil {
		m.revs = map[string]uint64{}
	}
	m.revs[id] = max(m.revs[id], rev)
}

// testRevs holds each test publisher's Revs (revsOf).
var testRevs sync.Map // *Publisher -> *Revs

// revsOf returns p's Revs: one per publisher, as one per term in the
// informer (a publisher stands for a leader in these tests).
func revsOf(p *Publisher) *Revs {
	r, _ := testRevs.LoadOrStore(p, NewRevs(&memRevs{}))
	return r.(*Revs)
}

func change(t *testing.T, typ eventsv1.EventType, s *ambientv1.Session) diff.Change[*ambientv1.Session] {
	t.Helper()
	enc, err := events.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	return diff.Change[*ambientv1.Session]{Type: typ, ID: s.GetMetadata().GetId(), New: enc}
}

func session(id string, prompt int) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.Unix(100, 0))},
		Name:     "s", Prompt: proto.String(strings.Repeat("p", prompt)),
	}
}

// TestPublishSizeRefusalIsFinal: a stream that refuses the message's size
// (max_msg_size, below the connection's max_payload) gives
// ErrUnpublishable, which the controller treats as final for the version,
// instead of an error retried forever.
func TestPublishSizeRefusalIsFinal(t *testing.T) {
	t.Parallel()
	p, _, _ := setup(t, 2048, time.Second)
	ctx := context.Background()
	if _, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, session("small", 10))); err != nil {
		t.Fatalf("small event: %v", err)
	}
	_, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, session("big", 4096)))
	if !errors.Is(err, ErrUnpublishable) {
		t.Fatalf("event over the stream's limit: err = %v, want ErrUnpublishable", err)
	}
}

// TestOverlongSubjectRefused: nats-server closes a connection whose PUB
// line is over its max_control_line (4096 bytes), and nats.go does not
// reconnect: a leader that sent one lost its lease, and its successor sent
// the same again. An event whose subject (an absurd prefix) or KV key (an
// id far longer than the API assigns) is over events.MaxSubjectLen is
// refused as ErrUnpublishable before anything is sent; Store skips such a
// key; the connection stays up and the next event goes out.
func TestOverlongSubjectRefused(t *testing.T) {
	t.Parallel()
	p, kv, js := setup(t, 0, time.Second)
	ctx := context.Background()
	long := session(strings.Repeat("i", 4100), 10)
	if _, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, long)); !errors.Is(err, ErrUnpublishable) {
		msg := fmt.Sprint(err) // names the event, id and all: its end says why
		t.Fatalf("event of a 4100-byte id: err = ...%s, want ErrUnpublishable", msg[max(0, len(msg)-60):])
	}
	enc, err := events.Encode(long)
	if err != nil {
		t.Fatal(err)
	}
	if err := Store[*ambientv1.Session](ctx, p, revsOf(p), long.GetMetadata().GetId(), enc, 1, true); err != nil {
		t.Fatalf("store of a 4100-byte id: %v, want it skipped", err)
	}
	far, err := New(js, kv, noop.NewTracerProvider().Tracer(""), Config{Prefix: "ev." + strings.Repeat("x", 1100), Stream: "EV"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(ctx, far, revsOf(far), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, session("s1", 10))); !errors.Is(err, ErrUnpublishable) {
		t.Fatalf("event under a 1103-byte prefix: err = %v, want ErrUnpublishable", err)
	}
	if !js.Conn().IsConnected() {
		t.Fatalf("connection %v: %v", js.Conn().Status(), js.Conn().LastError())
	}
	if _, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, session("s1", 10))); err != nil {
		t.Fatalf("next event: %v", err)
	}
}

// TestDeleteMarkerExpires: a published delete removes the key with a
// marker that the server drops after MarkerTTL, so the bucket does not keep
// a message per object ever deleted (issue 14 point 4).
func TestDeleteMarkerExpires(t *testing.T) {
	t.Parallel()
	p, kv, js := setup(t, 0, time.Second)
	ctx := context.Background()
	for i := range 20 {
		s := session(fmt.Sprintf("s%d", i), 10)
		out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, s))
		if err != nil {
			t.Fatal(err)
		}
		del := change(t, eventsv1.EventType_EVENT_TYPE_DELETED, s)
		del.Seq = out.Seq // the ADDED is the subject's last event
		if _, err := Publish(ctx, p, revsOf(p), del); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Get(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s0")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("deleted key: err = %v, want ErrKeyNotFound", err)
	}
	s, err := js.Stream(ctx, "KV_"+bus.BucketObjects)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if n := info.State.Msgs; n != 0 {
			return fmt.Errorf("bucket holds %d messages, want 0 once the markers expired", n)
		}
		return nil
	})
}

// TestPublishWritesKV: the KV write sent without kv.Put lands in the
// bucket as kv.Put would have written it, and its ack arrives through
// Outcome.KV.
func TestPublishWritesKV(t *testing.T) {
	t.Parallel()
	p, kv, _ := setup(t, 0, time.Second)
	ctx := context.Background()
	s := session("s1", 10)
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, s))
	if err != nil {
		t.Fatal(err)
	}
	ctx10, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := out.KV.Wait(ctx10); err != nil {
		t.Fatalf("KV write: %v", err)
	}
	e, err := kv.Get(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	got := &eventsv1.Object{}
	want := events.Wrap(s)
	want.EventSeq = 1 // the event's stream sequence: the cache's position
	if err := proto.Unmarshal(e.Value(), got); err != nil || !proto.Equal(got, want) {
		t.Fatalf("kv holds %v (%v), want the session at event_seq 1", got, err)
	}
}

// TestTailStart: the tail is read from TailMargin before the cache's
// position, or from the owed floor when that is earlier, never before the
// stream's first message, and from the last TailMargin when the position
// is unknown or of another stream (a floor of another stream is ignored).
func TestTailStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		seq, owed, first, last uint64
		want                   uint64
	}{
		{name: "empty stream", seq: 0, first: 0, last: 0, want: 0},
		{name: "short stream", seq: 10, first: 1, last: 20, want: 1},
		{name: "cache behind", seq: 20000, first: 1, last: 30000, want: 20001 - TailMargin},
		{name: "cache at the end", seq: 30000, first: 1, last: 30000, want: 30001 - TailMargin},
		{name: "old messages gone", seq: 20000, first: 15000, last: 30000, want: 15000},
		{name: "position unknown", seq: 0, first: 1, last: 30000, want: 30001 - TailMargin},
		{name: "stream recreated", seq: 50000, first: 1, last: 30000, want: 30001 - TailMargin},
		{name: "owed write further back", seq: 20000, owed: 5000, first: 1, last: 30000, want: 5000},
		{name: "owed write within the margin", seq: 20000, owed: 19000, first: 1, last: 30000, want: 20001 - TailMargin},
		{name: "owed write gone from the stream", seq: 20000, owed: 5000, first: 8000, last: 30000, want: 8000},
		{name: "owed floor of another stream", seq: 0, owed: 50000, first: 1, last: 30000, want: 30001 - TailMargin},
	}
	for _, tc := range tests {
		if got := tailStart(tc.seq, tc.owed, tc.first, tc.last, TailMargin); got != tc.want {
			t.Errorf("%s: tailStart(%d, %d, %d, %d) = %d, want %d", tc.name, tc.seq, tc.owed, tc.first, tc.last, got, tc.want)
		}
	}
}

// TestPublishSpan: each publish is a PRODUCER span naming the subject, the
// event id, the object and its project, the stream sequence of the ack and
// whether JetStream dropped it as a duplicate; a ctx attribute
// (telemetry.ContextWithAttributes) does not override the span's own.
func TestPublishSpan(t *testing.T) {
	t.Parallel()
	_, kv, js := setup(t, 0, time.Second)
	rec := tracetest.NewSpanRecorder()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() {
		if err := sdk.Shutdown(context.WithoutCancel(t.Context())); err != nil {
			t.Error(err)
		}
	})
	// The second publish below is refused (the ADDED is already the
	// subject's last event), then settled as a lost ack.
	reconfirm := func(context.Context) error { return nil }
	p, err := New(js, kv, telemetry.WithContextAttributes(sdk).Tracer("test"), Config{Prefix: "ev", Stream: "EV", Reconfirm: reconfirm})
	if err != nil {
		t.Fatal(err)
	}
	s := session("s1", 10)
	s.ProjectId = proto.String("p1")
	ctx := telemetry.ContextWithAttributes(t.Context(), telemetry.AttrObjectID.String("other"), attribute.String("ambient.caller", "sync"))
	c := change(t, eventsv1.EventType_EVENT_TYPE_ADDED, s)
	for range 2 { // the second is a duplicate: same event id
		if _, err := Publish(ctx, p, revsOf(p), c); err != nil {
			t.Fatal(err)
		}
	}

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for i, sp := range spans {
		if sp.SpanKind() != trace.SpanKindProducer || sp.Name() != "publish sessions ADDED" {
			t.Errorf("span %d: %v %q, want a producer span %q", i, sp.SpanKind(), sp.Name(), "publish sessions ADDED")
		}
		got := map[attribute.Key]string{}
		for _, kv := range sp.Attributes() {
			got[kv.Key] = kv.Value.String()
		}
		want := map[attribute.Key]string{
			"messaging.system":           "nats",
			"messaging.destination.name": "ev.sessions.p1.s1",
			"ambient.resource":           "sessions",
			"ambient.event_type":         "ADDED",
			"ambient.object_id":          "s1",
			"ambient.project_id":         "p1",
			"ambient.caller":             "sync",
			"messaging.nats.seq":         "1",
			"messaging.nats.duplicate":   fmt.Sprint(i == 1),
		}
		id := got["messaging.message.id"]
		delete(got, "messaging.message.id")
		if !strings.HasPrefix(id, "sessions/s1/") {
			t.Errorf("span %d: messaging.message.id = %q, want the event id", i, id)
		}
		if !maps.Equal(want, got) {
			t.Errorf("span %d attributes:\n got %v\nwant %v", i, got, want)
		}
	}
}

// TestFenceRefusesPublish: while Config.Fence refuses (a leader whose lease
// is not confirmed, after a pause), neither the event nor a KV write goes
// out; once it allows, the same change is published.
func TestFenceRefusesPublish(t *testing.T) {
	t.Parallel()
	p, kv, js := setup(t, 0, time.Second)
	errFenced := errors.New("fenced")
	var fenced atomic.Bool
	fenced.Store(true)
	p.cfg.Fence = func() error {
		if fenced.Load() {
			return errFenced
		}
		return nil
	}
	ctx := context.Background()
	s := session("s1", 10)
	if _, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, s)); !errors.Is(err, errFenced) {
		t.Fatalf("publish while fenced: err = %v, want the fence's error", err)
	}
	if err := Store[*ambientv1.Session](ctx, p, revsOf(p), "s1", events.Encoded{}, 1, false); !errors.Is(err, errFenced) {
		t.Fatalf("store while fenced: err = %v, want the fence's error", err)
	}
	st, err := js.Stream(ctx, "EV")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("stream holds %d messages after a fenced publish, want 0", info.State.Msgs)
	}
	if _, err := kv.Get(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s1")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("kv after a fenced publish: err = %v, want ErrKeyNotFound", err)
	}
	fenced.Store(false)
	out, err := Publish(ctx, p, revsOf(p), change(t, eventsv1.EventType_EVENT_TYPE_ADDED, s))
	if err != nil || out.Seq != 1 {
		t.Fatalf("publish once allowed: seq %d, err %v; want seq 1", out.Seq, err)
	}
}
