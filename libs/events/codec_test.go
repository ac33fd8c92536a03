package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func testSession(id, project, name string, at time.Time) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata:  &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(at), Kind: "Session"},
		Name:      name,
		ProjectId: proto.String(project),
	}
}

// TestCodecRoundTripWithTrace checks that an event encoded with a span in ctx
// decodes to the same event and a ctx whose remote span has the same ids.
func TestCodecRoundTripWithTrace(t *testing.T) {
	prop := propagation.TraceContext{}
	// The codec uses the global propagator; tests set it like telemetry.Setup.
	setPropagator(t, prop)

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	old := testSession("s.1", "proj a", "before", at.Add(-time.Second))
	cur := testSession("s.1", "proj a", "after", at)
	ev := NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, cur, old, at)

	msg, err := NewMsg(ctx, SubjectPrefix, ev)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ambient.events.sessions.proj_20a.s_2E1"; msg.Subject != want {
		t.Fatalf("subject = %q, want %q", msg.Subject, want)
	}
	if got := msg.Header.Get(HeaderMsgID); got != MsgID(ev) || got != ev.GetEventId() {
		t.Fatalf("Nats-Msg-Id = %q, want %q", got, MsgID(ev))
	}
	if msg.Header.Get(HeaderContentType) != ContentTypeProto {
		t.Fatalf("content type = %q", msg.Header.Get(HeaderContentType))
	}
	if len(msg.Header["traceparent"]) != 1 {
		t.Fatalf("no traceparent header in %v", msg.Header)
	}

	gotCtx, got, err := Decode(context.Background(), msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, got, protocmp.Transform()); diff != "" {
		t.Fatalf("decoded event differs (-want +got):\n%s", diff)
	}
	rsc := trace.SpanContextFromContext(gotCtx)
	if rsc.TraceID() != traceID || rsc.SpanID() != spanID || !rsc.IsRemote() {
		t.Fatalf("remote span = %v, want trace %v span %v", rsc, traceID, spanID)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, testSession("a", "", "n", time.Unix(1, 0)), nil, time.Unix(1, 0))
	wrongKind := proto.Clone(good).(*eventsv1.ResourceEvent)
	wrongKind.Resource = eventsv1.Resource_RESOURCE_PROJECTS
	wrongID := proto.Clone(good).(*eventsv1.ResourceEvent)
	wrongID.ObjectId = "b"
	noObject := proto.Clone(good).(*eventsv1.ResourceEvent)
	noObject.Object = nil
	tests := []struct {
		name string
		data []byte
	}{
		{name: "garbage", data: []byte{0xff, 0xff, 0xff}},
		{name: "empty", data: nil},
		{name: "kind mismatch", data: mustMarshal(t, wrongKind)},
		{name: "id mismatch", data: mustMarshal(t, wrongID)},
		{name: "no object", data: mustMarshal(t, noObject)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Decode(context.Background(), nats.Header{}, tc.data); !errors.Is(err, ErrBadEvent) {
				t.Fatalf("Decode err = %v, want ErrBadEvent", err)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000, time.UTC)
	s := testSession("id", "p", "n", at)
	nanos := proto.Clone(s).(*ambientv1.Session)
	nanos.Metadata.UpdatedAt = timestamppb.New(at.Add(789 * time.Nanosecond))
	if VersionOf(s) != VersionOf(nanos) {
		t.Fatalf("versions differ by sub-microsecond precision: %s vs %s", VersionOf(s), VersionOf(nanos))
	}
	changed := proto.Clone(s).(*ambientv1.Session)
	changed.Name = "other"
	if VersionOf(s) == VersionOf(changed) {
		t.Fatal("content change kept the version")
	}
	later := proto.Clone(s).(*ambientv1.Session)
	later.Metadata.UpdatedAt = timestamppb.New(at.Add(time.Second))
	if !Newer(VersionOf(later), VersionOf(s)) || Newer(VersionOf(s), VersionOf(later)) {
		t.Fatal("Newer does not follow updated_at")
	}
	if !strings.HasPrefix(VersionOf(s), "0") || VersionOf(s) > VersionOf(later) {
		t.Fatalf("versions do not sort as strings: %s, %s", VersionOf(s), VersionOf(later))
	}
	if got, ok := VersionTime(VersionOf(s)); !ok || !got.Equal(at) {
		t.Fatalf("VersionTime = %v, %v", got, ok)
	}
}

func TestObjectKey(t *testing.T) {
	for _, r := range Resources {
		key := ObjectKey(r, "a.b c")
		gr, id, err := ParseObjectKey(key)
		if err != nil || gr != r || id != "a.b c" {
			t.Fatalf("ParseObjectKey(%q) = %v %q %v", key, gr, id, err)
		}
	}
}

// FuzzDecode feeds arbitrary bytes and an arbitrary HeaderOmitted value to
// Decode: it must never panic; what it accepts re-encodes to an equal
// event, and a reference it returns has no object.
func FuzzDecode(f *testing.F) {
	f.Add(mustMarshal(f, NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, testSession("a", "p", "n", time.Unix(5, 0)), nil, time.Unix(5, 0))), "")
	ref := NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, testSession("a", "p", "n", time.Unix(5, 0)), nil, time.Unix(5, 0))
	ref.Object = nil
	f.Add(mustMarshal(f, ref), "old_object,object")
	f.Add([]byte{}, "object.annotations")
	f.Fuzz(func(t *testing.T, data []byte, omitted string) {
		h := nats.Header{}
		if omitted != "" {
			h.Set(HeaderOmitted, omitted)
		}
		_, ev, err := Decode(context.Background(), h, data)
		if errors.Is(err, ErrObjectTooLarge) {
			if ev == nil || ev.GetObject() != nil || ev.GetOldObject() != nil {
				t.Fatalf("reference event %v with an object", ev)
			}
			return
		}
		if err != nil {
			return
		}
		again, err := proto.Marshal(ev)
		if err != nil {
			t.Fatalf("re-marshal accepted event: %v", err)
		}
		_, ev2, err := Decode(context.Background(), nil, again)
		if err != nil || !proto.Equal(ev, ev2) {
			t.Fatalf("round trip changed the event: %v", err)
		}
	})
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
