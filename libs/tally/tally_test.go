package tally

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func ev(typ eventsv1.EventType, id string, us int64) *eventsv1.ResourceEvent {
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(time.UnixMicro(us))}}
	return events.NewEvent(typ, s, nil, time.Now())
}

func TestTally(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        []*eventsv1.ResourceEvent
		want      Counts
		wantRedel int
	}{
		{name: "empty"},
		{
			name: "one of each",
			in:   []*eventsv1.ResourceEvent{ev(1, "a", 1), ev(2, "a", 2), ev(3, "a", 2), ev(1, "b", 1)},
			want: Counts{Added: 2, Modified: 1, Deleted: 1, IDs: 2, DeletedIDs: []string{"a"}},
		},
		{
			name: "a repeated delete names its object once",
			in:   []*eventsv1.ResourceEvent{ev(1, "a", 1), ev(1, "b", 1), ev(3, "b", 2), ev(3, "b", 3)},
			want: Counts{Added: 2, Deleted: 2, IDs: 2, DeletedIDs: []string{"b"}},
		},
		{
			name:      "redelivery counted once",
			in:        []*eventsv1.ResourceEvent{ev(1, "a", 1), ev(1, "a", 1), ev(2, "a", 2), ev(2, "a", 2)},
			want:      Counts{Added: 1, Modified: 1, IDs: 1},
			wantRedel: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ta := New()
			at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			ta.now = func() time.Time { return at }
			for _, e := range tc.in {
				ta.Add(e)
			}
			rec := httptest.NewRecorder()
			ta.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tally?ids=true", nil))
			var s Snapshot
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				t.Fatal(err)
			}
			got := s.Resources["sessions"]
			if len(tc.in) > 0 {
				tc.want.LastEvent = at
			}
			if got.Added != tc.want.Added || got.Modified != tc.want.Modified || got.Deleted != tc.want.Deleted ||
				got.IDs != tc.want.IDs || !got.LastEvent.Equal(tc.want.LastEvent) || len(got.SeenIDs) != tc.want.IDs ||
				!slices.Equal(got.DeletedIDs, tc.want.DeletedIDs) {
				t.Errorf("sessions = %+v, want %+v", got, tc.want)
			}
			if s.Redeliveries != tc.wantRedel {
				t.Errorf("redeliveries = %d, want %d", s.Redeliveries, tc.wantRedel)
			}
			if _, ok := s.Resources["projects"]; !ok {
				t.Error("projects missing from the snapshot")
			}
		})
	}
}

// TestLastEventNeverGoesBack: the group calls Handle from many lanes at
// once, and each Add reads the clock before it takes the lock; a call that
// read the clock first but counted last must not set the last-event time
// (/tally, event_tally_last_event_timestamp_seconds) back.
func TestLastEventNeverGoesBack(t *testing.T) {
	t.Parallel()
	early := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	late := early.Add(time.Second)
	reading := make(chan struct{}) // closed once the first Add read the clock
	release := make(chan struct{}) // closed to let the first Add go on
	var calls atomic.Int32
	ta := New()
	ta.now = func() time.Time {
		if calls.Add(1) == 1 {
			close(reading)
			<-release
			return early
		}
		return late
	}
	done := make(chan struct{})
	// Owned by the test: ends once release is closed below.
	go func() {
		defer close(done)
		ta.Add(ev(eventsv1.EventType_EVENT_TYPE_ADDED, "a", 1))
	}()
	<-reading
	ta.Add(ev(eventsv1.EventType_EVENT_TYPE_ADDED, "b", 1))
	close(release)
	<-done
	s := ta.Snapshot(false)
	if !s.LastEvent.Equal(late) || !s.Resources["sessions"].LastEvent.Equal(late) {
		t.Errorf("last event = %s (sessions %s), want %s: the later count's time", s.LastEvent, s.Resources["sessions"].LastEvent, late)
	}
}
