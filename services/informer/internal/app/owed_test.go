package app_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
)

// TestOwedWriteOlderThanTheTailMargin: a KV write that failed stays owed
// and is retried while later events are published and their KV writes
// land. A new leader reads the stream's tail from publish.TailMargin
// (8,192; 8 here) before KV's highest position; a term that ended further
// than that after the owed event left the next leader without it: the
// project whose ADDED never reached KV, deleted before that leader listed,
// was never announced as deleted. The owed floor (publish.OwedKey) makes
// the next leader read from the owed event.
//
// The failing write is a real one: the objects bucket is set to refuse a
// write to a key that already holds a message (DiscardNewPerSubject) and
// the project reuses the name, so the id, of a deleted one, whose key holds
// its delete marker; writes of new keys still land. The API keeps a deleted
// project's name taken (soft deletes), so the deleted row is purged first
// (memapi's PurgeDeleted, a database purge).
func TestOwedWriteOlderThanTheTailMargin(t *testing.T) {
	t.Parallel()
	const margin = 8
	h := newHarness(t)
	h.seed(0, 1)
	env := map[string]string{config.EnvMarkerTTL: "1h", config.EnvAuditInterval: "0"}
	a := h.start("a", env, app.WithTailMargin(margin))
	h.waitConverged(live, bucket, 30*time.Second)

	ctx := t.Context()
	const reused = "reused"
	// One step at a time: a delete and a create of the same id that the
	// informer sees together coalesce into a MODIFIED.
	if _, err := h.c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: reused}); err != nil {
		t.Fatal(err)
	}
	h.waitProjectEvents(reused, eventsv1.EventType_EVENT_TYPE_ADDED, 1)
	if err := h.c.DeleteProject(ctx, reused); err != nil {
		t.Fatal(err)
	}
	h.waitProjectEvents(reused, eventsv1.EventType_EVENT_TYPE_DELETED, 1)
	h.waitConverged(live, bucket, 30*time.Second)
	h.api.PurgeDeleted()

	h.setDiscardNewPerSubject(true)
	if _, err := h.c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: reused}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := projectEvents(h, reused)[eventsv1.EventType_EVENT_TYPE_ADDED]; n != 2 {
			return fmt.Errorf("%d ADDED of %s, want 2", n, reused)
		}
		if a.metric("informer_publish_errors_total") < 1 {
			return errors.New("the KV write of the second ADDED has not failed yet")
		}
		return nil
	})
	// Later events whose KV writes land: KV's position moves past the
	// margin beyond the owed event.
	for i := range margin + 2 {
		if _, err := h.c.Projects().CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: fmt.Sprintf("later-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		for i := range margin + 2 {
			if key := events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECTS, fmt.Sprintf("later-%d", i)); kv[key] == nil {
				return fmt.Errorf("%s not in the objects bucket yet", key)
			}
		}
		if kv[events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECTS, reused)] != nil {
			return fmt.Errorf("%s in the objects bucket: the fault did not hold", reused)
		}
		return nil
	})
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	// While no informer leads, the fault ends and the project is deleted.
	h.setDiscardNewPerSubject(false)
	if err := h.c.DeleteProject(ctx, reused); err != nil {
		t.Fatal(err)
	}
	h.start("b", env, app.WithTailMargin(margin))
	// Converged means the stream, replayed, holds what the API holds: the
	// second incarnation of the project deleted too.
	h.waitConverged(live, bucket, 30*time.Second)
	if n := projectEvents(h, reused)[eventsv1.EventType_EVENT_TYPE_DELETED]; n != 2 {
		t.Fatalf("%d DELETED of %s, want 2", n, reused)
	}
	// Nothing owed any more: the floor is gone, and the next leader reads
	// from KV's position again.
	kv, err := h.js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		e, err := kv.Get(ctx, publish.OwedKey[*ambientv1.Project]())
		switch {
		case err == nil:
			return fmt.Errorf("owed floor %s still set, want none", e.Value())
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		return nil
	})
}

// waitProjectEvents waits until the live stream holds n events of type typ
// of project id.
func (h *harness) waitProjectEvents(id string, typ eventsv1.EventType, n int) {
	h.t.Helper()
	testenv.Eventually(h.t, 30*time.Second, func() error {
		if got := projectEvents(h, id)[typ]; got != n {
			return fmt.Errorf("%d %s of %s, want %d", got, typ, id, n)
		}
		return nil
	})
}

// projectEvents counts the events of project id in the live stream by type.
func projectEvents(h *harness, id string) map[eventsv1.EventType]int {
	h.t.Helper()
	out := map[eventsv1.EventType]int{}
	for _, ev := range h.streamEvents(live) {
		if ev.GetResource() == eventsv1.Resource_RESOURCE_PROJECTS && ev.GetObjectId() == id {
			out[ev.GetType()]++
		}
	}
	return out
}

// setDiscardNewPerSubject makes the objects bucket refuse (on) or take
// (off) a write to a key that already holds a message.
func (h *harness) setDiscardNewPerSubject(on bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.DiscardNewPerSubject = on
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		h.t.Fatalf("discard new per subject %v: %v", on, err)
	}
}
