package app_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// startOnSteppedClock starts a harness whose API reads its clock as a
// fixed base plus the returned offset (ns, 0 at first), so a test can
// step it back to a reading it stamped before, and informer "a" leading
// and ready on it.
func startOnSteppedClock(t *testing.T) (*harness, *informer, *atomic.Int64) {
	t.Helper()
	base := time.Now().Truncate(time.Second)
	at := new(atomic.Int64) // the API's clock, ns since base
	h := newHarness(t, memapi.WithClock(func() time.Time { return base.Add(time.Duration(at.Load())) }))
	inf := h.start("a", nil)
	h.waitLeaderReady(inf, 30*time.Second)
	return h, inf, at
}

// TestRolledBackStateIsPublished: the API goes back to a state it
// had before (a restore, a failover to a lagging replica, a clock step
// back that stamps the same time): the object is byte for byte a version
// published earlier. Consumers hold the newer state and must be told.
func TestRolledBackStateIsPublished(t *testing.T) {
	t.Parallel()
	h, inf, at := startOnSteppedClock(t)
	id := h.createSession("rollback").GetMetadata().GetId()
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := inf.metric("informer_relists_total", `resource="sessions"`); n < 2 {
			return fmt.Errorf("sessions listed %v times, want the confirming relist", n)
		}
		return nil
	})
	at.Store(int64(time.Second))
	h.updateSession(id, "v1")
	waitPublishedPrompt(t, h, id, "v1", 30*time.Second)
	at.Store(int64(2 * time.Second))
	h.updateSession(id, "v2")
	waitPublishedPrompt(t, h, id, "v2", 30*time.Second)

	// Back to exactly v1 (same updated_at, same content).
	at.Store(int64(time.Second))
	h.updateSession(id, "v1")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("informer_events_duplicates_total = %v", inf.metric("informer_events_duplicates_total"))
		}
	})
	waitPublishedPrompt(t, h, id, "v1", 30*time.Second)
}

// TestRestoredProjectIsAnnounced: a project is created and deleted,
// then the API brings it back exactly as it was (a restore of the
// database, a failover to a replica that missed the delete; here the same
// name created again at the same clock reading). The informer must announce
// it again: consumers were told it is gone.
func TestRestoredProjectIsAnnounced(t *testing.T) {
	t.Parallel()
	h, inf, at := startOnSteppedClock(t)
	ctx := context.Background()
	if _, err := h.c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "restored"}); err != nil {
		t.Fatal(err)
	}
	waitLastProjectEvent(t, h, "restored", eventsv1.EventType_EVENT_TYPE_ADDED)
	at.Store(int64(time.Second))
	if err := h.c.DeleteProject(ctx, "restored"); err != nil {
		t.Fatal(err)
	}
	waitLastProjectEvent(t, h, "restored", eventsv1.EventType_EVENT_TYPE_DELETED)

	at.Store(0)
	h.api.PurgeDeleted() // frees the name, as the restored database never saw the delete
	if _, err := h.c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: "restored"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("informer_events_duplicates_total = %v; objects bucket holds the project: %v", inf.metric("informer_events_duplicates_total"),
				h.kvObjects(bucket)[events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECTS, "restored")] != nil)
		}
	})
	waitLastProjectEvent(t, h, "restored", eventsv1.EventType_EVENT_TYPE_ADDED)
}

// waitLastProjectEvent waits until the stream's last event of project id
// is of type typ.
func waitLastProjectEvent(t *testing.T, h *harness, id string, typ eventsv1.EventType) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		evs, err := h.tryStreamEvents(live)
		if err != nil {
			return err
		}
		var last *eventsv1.ResourceEvent
		for _, ev := range evs {
			if ev.GetResource() == eventsv1.Resource_RESOURCE_PROJECTS && ev.GetObjectId() == id {
				last = ev
			}
		}
		if last.GetType() != typ {
			return fmt.Errorf("last event of project %s: %v, want %v", id, last.GetType(), typ)
		}
		return nil
	})
}
