package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// bigSession is a session whose annotations are n bytes.
func bigSession(id string, n int, at time.Time) *ambientv1.Session {
	s := testSession(id, "p1", "big", at)
	s.Annotations = proto.String(`{"a":"` + strings.Repeat("x", n) + `"}`)
	s.Phase = proto.String("Stopping")
	return s
}

// TestNewMsgLimit: an event over the limit loses old_object first, then
// (DELETED) the largest fields, then (ADDED, MODIFIED) the object; every
// message fits the limit, says what it left out, decodes as documented,
// and the objects the event pointed to are untouched.
func TestNewMsgLimit(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	small := testSession("s1", "p1", "small", at)
	half := bigSession("s1", limit*6/10, at)
	halfOld := bigSession("s1", limit*6/10, at.Add(-time.Second))
	over := bigSession("s1", limit*2, at)
	tests := []struct {
		name       string
		typ        eventsv1.EventType
		obj, old   *ambientv1.Session
		want       Omission
		header     string
		decodeErr  error
		keepObject bool // the decoded object equals obj
	}{
		{name: "fits: nothing left out", typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, obj: small, old: small, keepObject: true},
		{
			name: "modified, old and new over the limit: old dropped", typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, obj: half, old: halfOld,
			want: Omission{OldObject: true}, header: "old_object", keepObject: true,
		},
		{
			name: "deleted over the limit: largest field cleared, identity kept", typ: eventsv1.EventType_EVENT_TYPE_DELETED, obj: over,
			want: Omission{Fields: []string{"annotations"}}, header: "object.annotations",
		},
		{
			name: "added over the limit: reference", typ: eventsv1.EventType_EVENT_TYPE_ADDED, obj: over,
			want: Omission{Object: true}, header: "object", decodeErr: ErrObjectTooLarge,
		},
		{
			name: "modified, new alone over the limit: reference", typ: eventsv1.EventType_EVENT_TYPE_MODIFIED, obj: over, old: half,
			want: Omission{OldObject: true, Object: true}, header: "old_object,object", decodeErr: ErrObjectTooLarge,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objBefore, oldBefore := proto.Clone(tc.obj), proto.Clone(tc.old)
			ev := NewEvent(tc.typ, tc.obj, tc.old, at)
			msg, om, err := NewMsgLimit(context.Background(), SubjectPrefix, ev, limit)
			if err != nil {
				t.Fatal(err)
			}
			if size := PayloadSize(msg); size > limit {
				t.Fatalf("payload %d over the limit %d", size, limit)
			}
			if om.Size == 0 && om.Any() {
				t.Error("omission without the full size")
			}
			om.Size = 0
			if diff := cmp.Diff(tc.want, om); diff != "" {
				t.Errorf("omission (-want +got):\n%s", diff)
			}
			if got := msg.Header.Get(HeaderOmitted); got != tc.header {
				t.Errorf("%s = %q, want %q", HeaderOmitted, got, tc.header)
			}
			if diff := cmp.Diff(tc.want, Omitted(msg.Header)); diff != "" {
				t.Errorf("Omitted(header) (-want +got):\n%s", diff)
			}
			if !proto.Equal(tc.obj, objBefore) || !proto.Equal(tc.old, oldBefore) {
				t.Fatal("NewMsgLimit changed the objects the event pointed to")
			}
			_, got, err := Decode(context.Background(), msg.Header, msg.Data)
			if !errors.Is(err, tc.decodeErr) || (err != nil && tc.decodeErr == nil) {
				t.Fatalf("Decode err = %v, want %v", err, tc.decodeErr)
			}
			if got.GetObjectId() != "s1" || got.GetProjectId() != "p1" || got.GetVersion() != VersionOf(tc.obj) || got.GetType() != tc.typ {
				t.Fatalf("decoded event lost its identity: %v", got)
			}
			switch s := got.GetObject().GetSession(); {
			case tc.keepObject:
				if diff := cmp.Diff(tc.obj, s, protocmp.Transform()); diff != "" {
					t.Errorf("object (-want +got):\n%s", diff)
				}
			case tc.want.Object:
				if got.GetObject() != nil || got.GetOldObject() != nil {
					t.Error("reference event carries an object")
				}
			default: // trimmed
				if s.GetAnnotations() != "" || s.GetName() != "big" || s.GetPhase() != "Stopping" || !proto.Equal(s.GetMetadata(), tc.obj.GetMetadata()) {
					t.Errorf("trimmed object = name %q phase %q annotations %d bytes, metadata %v", s.GetName(), s.GetPhase(), len(s.GetAnnotations()), s.GetMetadata())
				}
			}
		})
	}
}

// TestNewMsgLimitIDOverLimit: when not even the reference fits, nothing is
// sent and the caller is told why.
func TestNewMsgLimitIDOverLimit(t *testing.T) {
	t.Parallel()
	ev := NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, testSession(strings.Repeat("i", 300), "p", "n", time.Unix(1, 0)), nil, time.Unix(1, 0))
	if _, _, err := NewMsgLimit(context.Background(), SubjectPrefix, ev, 200); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

// TestDecodeReferenceNeedsHeader: the body of a reference event alone (a
// copy that lost its headers) is rejected as malformed, never taken for an
// empty object; a header claiming a reference over a body with an object is
// malformed too.
func TestDecodeReferenceNeedsHeader(t *testing.T) {
	t.Parallel()
	at := time.Unix(5, 0)
	ev := NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, bigSession("s1", 4096, at), nil, at)
	msg, om, err := NewMsgLimit(context.Background(), SubjectPrefix, ev, 1024)
	if err != nil || !om.Object {
		t.Fatalf("want a reference event, got %+v, %v", om, err)
	}
	if _, _, err := Decode(context.Background(), nil, msg.Data); !errors.Is(err, ErrBadEvent) {
		t.Errorf("reference without header: err = %v, want ErrBadEvent", err)
	}
	full := mustMarshal(t, NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, testSession("s1", "p", "n", at), nil, at))
	if _, _, err := Decode(context.Background(), msg.Header, full); !errors.Is(err, ErrBadEvent) {
		t.Errorf("reference header over a full body: err = %v, want ErrBadEvent", err)
	}
}

// TestNewMsgLimitOnRealServer: with the limit the server announces
// (nats.Conn.MaxPayload), the complete event of a 1.5 MiB object is refused
// by the client (what blocked the informer in issue 14) and the message
// NewMsgLimit builds is accepted: PayloadSize counts what NATS counts.
func TestNewMsgLimitOnRealServer(t *testing.T) {
	t.Parallel()
	nc := testenv.Conn(t, testenv.NATS(t))
	limit := int(nc.MaxPayload())
	at := time.Unix(7, 0)
	sub, err := nc.SubscribeSync(SubjectPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	obj, old := bigSession("s1", limit*3/2, at), bigSession("s1", limit/2, at.Add(-time.Second))
	full, err := NewMsg(context.Background(), SubjectPrefix, NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, obj, old, at))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(full); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("complete event: publish err = %v, want ErrMaxPayload", err)
	}
	for _, near := range []int{limit / 2, limit - 600, limit - 300} {
		obj := bigSession("s1", near, at)
		msg, _, err := NewMsgLimit(context.Background(), SubjectPrefix, NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, obj, old, at), limit)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatalf("object of %d bytes: publish: %v", near, err)
		}
		got, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Decode(context.Background(), got.Header, got.Data); err != nil && !errors.Is(err, ErrObjectTooLarge) {
			t.Fatalf("object of %d bytes: decode: %v", near, err)
		}
	}
}
