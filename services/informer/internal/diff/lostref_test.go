package diff

import (
	"testing"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestLostEntryUnderAReferenceIsAnnouncedDeleted mirrors Lead's load
// after the events stream was lost alone: the recreated stream's tail
// holds only a reference event of "big" (its ADDED was over the payload
// limit, so its KV write was skipped and the key keeps the lost stream's
// entry: Outdated). catchUp hands it to LoadRef (no Fitted state), then
// LoadLost with the entry's state. The API deleted "big" since: consumers
// of the new stream were told of it (the reference ADDED) and must be
// told it is gone.
func TestLostEntryUnderAReferenceIsAnnouncedDeleted(t *testing.T) {
	t.Parallel()
	s := NewStore[*ambientv1.Session]()
	s.LoadKV(nil, nil, nil)
	s.LoadRef("big", "v-big", 7)
	if !s.LoadLost(inProject("big", "b1", "p", 1), 12) {
		t.Fatal("LoadLost failed")
	}
	r := s.Sync(nil, nil) // the API no longer holds "big"
	c, ok := s.Next("big")
	if !ok || c.Type != eventsv1.EventType_EVENT_TYPE_DELETED {
		t.Fatalf("big: Next = %v %v (dirty %v), want a DELETED: consumers got its reference ADDED at seq 7 and are never told it is gone", ok, c.Type, r.Dirty)
	}
}
