package tally

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// modified is the informer's message of session a at updated_at us
// (microseconds), published expecting subject sequence expected: its
// Nats-Msg-Id is the event id with the expected sequence appended.
func modified(us int64, expected string) group.Message {
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "a", UpdatedAt: timestamppb.New(time.UnixMicro(us))}}
	ev := events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, s, nil, time.Now())
	h := nats.Header{}
	h.Set(events.HeaderMsgID, ev.GetEventId()+"/"+expected)
	return group.Message{Event: ev, Header: h}
}

// TestStateThatComesBackIsCountedAsAnEvent: the informer publishes a
// state that comes back (v1, v2, v1 again) as a new message, with the
// same body event_id as the first v1 but another Nats-Msg-Id. The stream
// holds three MODIFIED events: three are counted, no redelivery.
func TestStateThatComesBackIsCountedAsAnEvent(t *testing.T) {
	t.Parallel()
	tl := New()
	for _, m := range []group.Message{modified(1, "1"), modified(2, "2"), modified(1, "3")} {
		if err := tl.Handle(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	s := tl.Snapshot(false)
	if got := s.Resources["sessions"].Modified; got != 3 || s.Redeliveries != 0 || s.Events != 3 {
		t.Fatalf("counted %d MODIFIED, %d events and %d redeliveries, want 3, 3 and 0: the stream holds three distinct messages", got, s.Events, s.Redeliveries)
	}
}

// TestRedeliveredMessageIsCountedOnce: the same message delivered twice
// (same Nats-Msg-Id) is one event and one redelivery; a message without
// the header is told apart by its body's event id.
func TestRedeliveredMessageIsCountedOnce(t *testing.T) {
	t.Parallel()
	tl := New()
	m := modified(1, "1")
	bare := modified(2, "2")
	bare.Header = nil
	for _, m := range []group.Message{m, m, bare, bare} {
		if err := tl.Handle(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	s := tl.Snapshot(false)
	if got := s.Resources["sessions"].Modified; got != 2 || s.Redeliveries != 2 {
		t.Fatalf("counted %d MODIFIED and %d redeliveries, want 2 and 2", got, s.Redeliveries)
	}
}
