package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/synadia-io/orbit.go/pcgroups"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestPartitionsOf: the harness reads which objects a member's partitions
// hold from the group's mapping in NATS, with the partition function the
// services use; a member without partitions holds none, and a group that
// does not exist is an error, not an empty answer.
func TestPartitionsOf(t *testing.T) {
	ctx := t.Context()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	if _, err := bus.EnsureEventsStream(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	const partitions = 16
	filter := []pcgroups.PartitioningFilter{{Filter: events.SubjectPrefix + ".*.*.*", PartitioningWildcards: []int{3}}}
	if _, err := pcgroups.CreateElastic(ctx, js, eventsStream, svcKubeReconciler, partitions, filter, 0, 0); err != nil {
		t.Fatal(err)
	}
	low, high := []int{0, 1, 2, 3, 4, 5, 6, 7}, []int{8, 9, 10, 11, 12, 13, 14, 15}
	if err := pcgroups.SetMemberMappings(ctx, js, eventsStream, svcKubeReconciler, []pcgroups.MemberMapping{
		{Member: "kube-reconciler-0", Partitions: low}, {Member: "kube-reconciler-1", Partitions: high},
	}); err != nil {
		t.Fatal(err)
	}
	v := &natsView{js: js}
	in0, err := v.partitionsOf(ctx, svcKubeReconciler, "kube-reconciler-0")
	if err != nil {
		t.Fatal(err)
	}
	inNobody, err := v.partitionsOf(ctx, svcKubeReconciler, "kube-reconciler-9")
	if err != nil {
		t.Fatal(err)
	}
	var held int
	for i := range 64 {
		id := fmt.Sprintf("session-%d", i)
		want := group.PartitionOf(id, partitions) < 8
		if in0(id) != want {
			t.Errorf("%s (partition %d): in kube-reconciler-0's partitions %t, want %t", id, group.PartitionOf(id, partitions), in0(id), want)
		}
		if want {
			held++
		}
		if inNobody(id) {
			t.Errorf("%s in the partitions of a member without any", id)
		}
	}
	if held == 0 || held == 64 {
		t.Fatalf("%d of 64 ids in half the partitions: the test cannot tell", held)
	}
	if _, err := v.partitionsOf(ctx, "no-such-group", "kube-reconciler-0"); err == nil {
		t.Error("partitionsOf of a missing group: no error")
	}
}

// testSession is a state of session id in project p, updated at micros
// (nanoseconds added: the version truncates them).
func testSession(id string, micros int64, phase string) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata:  &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.UnixMicro(micros).Add(123 * time.Nanosecond))},
		Name:      id,
		ProjectId: proto.String("p"),
		Phase:     proto.String(phase),
	}
}

// kvValue is the objects bucket's value of s as published at seq.
func kvValue(t *testing.T, s *ambientv1.Session, seq uint64) []byte {
	t.Helper()
	o := events.Wrap(s)
	o.EventSeq = seq
	b, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeObjectEntry: an entry of the objects bucket gives its object's
// key, version (the one its events carry) and event_seq; the owed-write
// floor is skipped; anything else that is not an object's state is named.
func TestDecodeObjectEntry(t *testing.T) {
	s := testSession("s/1", 1_700_000_000_000_000, "Running")
	key := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "s/1")
	e, ok := decodeObjectEntry(key, kvValue(t, s, 42), 7)
	want := kvEntry{Key: "sessions/s/1", Version: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()).GetVersion(), EventSeq: 42, Revision: 7}
	if !ok || e != want {
		t.Errorf("entry %+v, want %+v", e, want)
	}
	if _, ok := decodeObjectEntry("informer-owed.sessions", []byte("12"), 3); ok {
		t.Error("the owed-write floor read as an entry")
	}
	for _, tc := range []struct {
		key   string
		value []byte
		want  string
	}{
		{"nonsense.x", kvValue(t, s, 1), "not an object key"},
		{key, []byte{0xff, 0xff}, "does not decode"},
		{key, nil, "holds no object"},
		{events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "other"), kvValue(t, s, 1), "value holds sessions/s/1"},
		{events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECTS, "s/1"), kvValue(t, s, 1), "value holds sessions/s/1"},
	} {
		if e, ok := decodeObjectEntry(tc.key, tc.value, 1); !ok || !strings.Contains(e.Err, tc.want) || e.Key != tc.key {
			t.Errorf("%s: entry %+v, want an error naming %q", tc.key, e, tc.want)
		}
	}
}

// TestReadObjectsAgreeing: the harness reads the events stream (reference
// events and replayed dead letters marked, from any sequence on) and the
// objects bucket's live entries, and compares them again, with the events
// published since, while they disagree, up to its limit.
func TestReadObjectsAgreeing(t *testing.T) {
	ctx := t.Context()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	if _, err := bus.EnsureEventsStream(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureKV(ctx, js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	publish := func(msg *nats.Msg) uint64 {
		t.Helper()
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	event := func(typ eventsv1.EventType, s *ambientv1.Session) *nats.Msg {
		t.Helper()
		msg, err := events.NewMsg(ctx, events.SubjectPrefix, events.NewEvent(typ, s, nil, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	put := func(s *ambientv1.Session, seq uint64) {
		t.Helper()
		if _, err := kv.Put(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, s.GetMetadata().GetId()), kvValue(t, s, seq)); err != nil {
			t.Fatal(err)
		}
	}
	a1, a2, b := testSession("a", 100, "Pending"), testSession("a", 200, "Running"), testSession("b", 100, "Pending")
	big := testSession("big", 100, "Pending")
	big.Annotations = proto.String(strings.Repeat("x", 4096))
	seqA1 := publish(event(eventsv1.EventType_EVENT_TYPE_ADDED, a1))
	seqB := publish(event(eventsv1.EventType_EVENT_TYPE_ADDED, b))
	seqA2 := publish(event(eventsv1.EventType_EVENT_TYPE_MODIFIED, a2))
	publish(event(eventsv1.EventType_EVENT_TYPE_DELETED, b))
	ref, om, err := events.NewMsgLimit(ctx, events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, big, nil, time.Now()), 1024)
	if err != nil || !om.Object {
		t.Fatalf("reference event: %v, omission %+v", err, om)
	}
	publish(ref)
	replay := event(eventsv1.EventType_EVENT_TYPE_ADDED, a1) // a dead letter replayed for one group
	replay.Header.Set(events.HeaderMsgID, "replay-1")
	replay.Header.Set(group.HeaderReplayGroup, svcKubeReconciler)
	publish(replay)

	put(a1, seqA1) // stale: a's last event is seqA2
	put(b, seqB)
	if err := kv.Purge(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, owedKeyPrefix+events.TokenSessions, []byte("3")); err != nil {
		t.Fatal(err)
	}

	v := &natsView{js: js}
	evs, first, err := v.readEvents(ctx, 0)
	if err != nil || first != 1 || len(evs) != 6 {
		t.Fatalf("read %d events from %d: %v, want 6 from 1", len(evs), first, err)
	}
	if !evs[4].Ref || evs[4].Key != "sessions/big" || evs[4].Replayed || !evs[5].Replayed || evs[5].Key != "sessions/a" || evs[0].Ref || evs[0].Replayed {
		t.Errorf("reference and replay not told apart: %+v", evs)
	}
	if more, _, err := v.readEvents(ctx, 4); err != nil || len(more) != 2 || more[0].Seq != 5 {
		t.Errorf("events after 4: %+v, %v", more, err)
	}
	if more, _, err := v.readEvents(ctx, 6); err != nil || len(more) != 0 {
		t.Errorf("events after the last: %+v, %v", more, err)
	}

	rd := v.readObjectsAgreeing(ctx, evs, first, nil, 200*time.Millisecond, 20*time.Millisecond)
	f := compareObjects(rd.Events, rd.FirstSeq, rd.Entries)
	if rd.Err != nil || rd.Reads < 2 || len(f.Mismatches) != 1 || !strings.Contains(f.Mismatches[0], "sessions/a: last event MODIFIED") {
		t.Errorf("stale entry: %d reads, %v, mismatches %q", rd.Reads, rd.Err, f.Mismatches)
	}

	// The bucket agrees at once.
	put(a2, seqA2)
	rd = v.readObjectsAgreeing(ctx, evs, first, nil, time.Minute, 20*time.Millisecond)
	f = compareObjects(rd.Events, rd.FirstSeq, rd.Entries)
	if rd.Err != nil || rd.Reads != 1 || len(rd.Entries) != 1 || len(f.Mismatches) != 0 ||
		[4]int{f.Live, f.Deleted, f.Ref, f.Replays} != [4]int{1, 1, 1, 1} {
		t.Errorf("agreeing bucket: %d reads, %v, entries %+v, findings %+v", rd.Reads, rd.Err, rd.Entries, f)
	}

	// A change published after the stream was read: the bucket agrees
	// with the stream read again.
	a3 := testSession("a", 300, "Stopped")
	put(a3, publish(event(eventsv1.EventType_EVENT_TYPE_MODIFIED, a3)))
	rd = v.readObjectsAgreeing(ctx, evs, first, nil, time.Minute, 20*time.Millisecond)
	f = compareObjects(rd.Events, rd.FirstSeq, rd.Entries)
	if rd.Err != nil || rd.Reads != 2 || len(rd.Events) != 7 || len(f.Mismatches) != 0 || f.Live != 1 {
		t.Errorf("bucket ahead of the stream read: %d reads, %d events, %v, findings %+v", rd.Reads, len(rd.Events), rd.Err, f)
	}
}
