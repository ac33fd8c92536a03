package group

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/events"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// publishIn adds an event of session id in project to the stream: the
// subject carries the project, so a session moved to another project
// changes subject while it stays one object (one lane, one partition).
func (q *workQueue) publishIn(t *testing.T, project, id string) {
	t.Helper()
	sess := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.Now(), Kind: "Session"}, ProjectId: proto.String(project)}
	msg, err := events.NewMsg(t.Context(), events.SubjectPrefix, events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, sess, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

// TestLaneWaitsForOlderLostDeliveryOfMovedObject: session x moved from
// project p1 to p2, so its v1 is on ....p1.x and its v2 on ....p2.x. v1 was
// lost in transit and v2 arrives first. The lane (keyed by the id) must
// look for the object's older messages under every subject of the object,
// not only the head's, and wait for v1.
func TestLaneWaitsForOlderLostDeliveryOfMovedObject(t *testing.T) {
	t.Parallel()
	lateOlderHandledFirst(t, func(q *workQueue) {
		q.publishIn(t, "p1", "x")
		q.publishIn(t, "p2", "x")
	})
}

// TestCoalescedBatchStopsAtLostEventOfMovedObject: as
// TestCoalescedBatchStopsAtLostEvent, but the object moved to another
// project between the lost v3 and the queued v4 (other subjects): v2 and
// v4 must not be coalesced over v3.
func TestCoalescedBatchStopsAtLostEventOfMovedObject(t *testing.T) {
	t.Parallel()
	q := newWorkQueue(t, 30*time.Second)
	q.cfg.Coalesce = true
	q.publishIn(t, "p1", "x")
	q.publishIn(t, "p1", "x")
	q.publishIn(t, "p1", "x")
	q.publishIn(t, "p2", "x")
	coalescedBatchStopsAtLostThird(t, q)
}
