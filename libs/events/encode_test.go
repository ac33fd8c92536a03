package events

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// richSession sets fields before and after metadata and every kind of
// value the hash walks over.
func richSession(id string, at time.Time) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata: &ambientv1.ObjectReference{Id: id, Kind: "Session", Href: "/s/" + id,
			CreatedAt: timestamppb.New(at.Add(-time.Hour)), UpdatedAt: timestamppb.New(at)},
		Name: "n", Prompt: proto.String("p"), ProjectId: proto.String("proj"), Timeout: proto.Int32(-5),
		LlmTemperature: proto.Float64(0.7), StartTime: timestamppb.New(at.Add(time.Minute)), Phase: proto.String("Running"),
	}
}

// TestEncode: one marshal gives the version VersionOf computes (so events
// and KV agree with every other user of versions), the project, and bytes
// that decode to the object; the Object and event encodings built from them
// decode to what Wrap and NewEventVersion build.
func TestEncode(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC)
	noMeta := &ambientv1.Session{Name: "no metadata"}
	onlyUpdated := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{UpdatedAt: timestamppb.New(at)}}
	tests := []struct {
		name string
		obj  *ambientv1.Session
		old  *ambientv1.Session
	}{
		{name: "rich", obj: richSession("s1", at), old: richSession("s1", at.Add(-time.Second))},
		{name: "no old", obj: richSession("s.2 x", at)},
		{name: "no metadata", obj: noMeta},
		{name: "metadata with only updated_at", obj: onlyUpdated},
		{name: "before the epoch", obj: richSession("s3", time.Unix(-5, 0))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkEncode(t, tc.obj, tc.old, at)
		})
	}
	// The other two kinds.
	p := &ambientv1.Project{Metadata: &ambientv1.ObjectReference{Id: "p", UpdatedAt: timestamppb.New(at)}, Name: "p", Description: proto.String("d")}
	checkEncode(t, p, nil, at)
	ps := &ambientv1.ProjectSettings{Metadata: &ambientv1.ObjectReference{Id: "x", UpdatedAt: timestamppb.New(at)}, ProjectId: "p", GroupAccess: proto.String("[]")}
	checkEncode(t, ps, nil, at)
}

func checkEncode[T APIObject](t *testing.T, obj, old T, observed time.Time) {
	t.Helper()
	e, err := Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	if want := VersionOf(obj); e.Version() != want {
		t.Fatalf("version %s, want VersionOf %s", e.Version(), want)
	}
	if want := ProjectID(Wrap(obj)); e.ProjectID != want {
		t.Fatalf("project %q, want %q", e.ProjectID, want)
	}
	back, err := DecodeObject[T](e.Raw)
	if err != nil || !proto.Equal(back, obj) {
		t.Fatalf("decode: %v, equal %v", err, proto.Equal(back, obj))
	}
	gotObj := &eventsv1.Object{}
	if err := proto.Unmarshal(AppendObject[T](nil, e.Raw), gotObj); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Wrap(obj), gotObj, protocmp.Transform()); diff != "" {
		t.Fatalf("object (-want +got):\n%s", diff)
	}
	withSeq := &eventsv1.Object{}
	if err := proto.Unmarshal(AppendEventSeq(AppendObject[T](nil, e.Raw), 1<<40+7), withSeq); err != nil {
		t.Fatal(err)
	}
	wantSeq := Wrap(obj)
	wantSeq.EventSeq = 1<<40 + 7
	if diff := cmp.Diff(wantSeq, withSeq, protocmp.Transform()); diff != "" {
		t.Fatalf("object with event_seq (-want +got):\n%s", diff)
	}
	var oldEnc Encoded
	var zero T
	if any(old) != any(zero) {
		if oldEnc, err = Encode(old); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range []eventsv1.EventType{eventsv1.EventType_EVENT_TYPE_ADDED, eventsv1.EventType_EVENT_TYPE_MODIFIED, eventsv1.EventType_EVENT_TYPE_DELETED} {
		data, id := MarshalEvent[T](typ, obj.GetMetadata().GetId(), e, oldEnc, observed)
		got := &eventsv1.ResourceEvent{}
		if err := proto.Unmarshal(data, got); err != nil {
			t.Fatal(err)
		}
		want := NewEventVersion(typ, obj, old, e.Version(), observed)
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Fatalf("%v event (-want +got):\n%s", typ, diff)
		}
		if id != want.GetEventId() {
			t.Fatalf("event id %s, want %s", id, want.GetEventId())
		}
	}
}

// FuzzEncodeVersion: for any session the version Encode derives from its
// bytes is VersionOf's.
func FuzzEncodeVersion(f *testing.F) {
	f.Add("id", "name", "prompt", int64(1764583200), int32(5), "proj", "href")
	f.Add("", "", "", int64(0), int32(0), "", "")
	f.Fuzz(func(t *testing.T, id, name, prompt string, secs int64, nanos int32, project, href string) {
		s := &ambientv1.Session{
			Metadata: &ambientv1.ObjectReference{Id: id, Href: href, UpdatedAt: &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}},
			Name:     name, Prompt: proto.String(prompt), ProjectId: proto.String(project),
		}
		e, err := Encode(s)
		if err != nil {
			return // invalid UTF-8: does not marshal at all
		}
		if want := VersionOf(s); e.Version() != want {
			t.Fatalf("version %s, want %s", e.Version(), want)
		}
	})
}

// BenchmarkEncode compares Encode (one marshal, hash from the bytes) with
// what the informer did per object before: VersionOf (clone, marshal, hash)
// plus a marshal of the KV value.
func BenchmarkEncode(b *testing.B) {
	s := richSession("2Zx3aBcDeFgHiJkLmNoPqRsTuVw", time.Now())
	b.Run("Encode+AppendObject", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e, err := Encode(s)
			if err != nil {
				b.Fatal(err)
			}
			_ = AppendObject[*ambientv1.Session](nil, e.Raw)
		}
	})
	b.Run("VersionOf+Marshal(Wrap)", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = VersionOf(s)
			if _, err := proto.Marshal(Wrap(s)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
