package app_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestRewrittenEntriesKeepEventSeq: every objects-bucket entry records the
// stream sequence of the event that published its state, also the entries
// written again after the event: by the KV audit (an entry gone from the
// bucket) and by a new leader that caught up from the stream's tail (a
// crash between ack and KV write). A new leader starts reading the stream
// from the entries' highest event_seq (publish.Tail); rewritten entries
// used to carry none, so a resource whose entries had all been rewritten
// (a few projects after a KV hiccup) looked "position unknown" and only the
// stream's last 8,192 sequences were read: an ADDED whose KV write was lost
// further back, its object deleted before the next list, was never followed
// by its DELETED.
func TestRewrittenEntriesKeepEventSeq(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(3, 1)
	ids := h.sessionIDs()
	target := ids[1]
	crash := func(_ context.Context, ev *eventsv1.ResourceEvent) error {
		if ev.GetObjectId() == target && ev.GetType() == eventsv1.EventType_EVENT_TYPE_MODIFIED {
			return errCrash
		}
		return nil
	}
	a := h.start("a", nil, app.WithAfterPublish(crash))
	h.waitConverged(live, bucket, 30*time.Second)
	h.updateSession(target, "crash on me")
	if err := a.wait(t, 30*time.Second); !errors.Is(err, errCrash) {
		t.Fatalf("Run = %v, want the injected crash", err)
	}

	// b takes target's state from the tail and writes its entry again.
	h.start("b", map[string]string{config.EnvAuditInterval: "100ms"})
	h.waitConverged(live, bucket, 30*time.Second)
	kv, err := h.js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	targetKey := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, target)
	h.wantEventSeq(kv, targetKey)

	// The audit writes an entry gone from the bucket again.
	goneKey := events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, ids[0])
	old, err := kv.Get(t.Context(), goneKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(t.Context(), goneKey); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		e, err := kv.Get(t.Context(), goneKey)
		if err != nil {
			return fmt.Errorf("%s not written again: %w", goneKey, err)
		}
		if e.Revision() <= old.Revision() {
			return fmt.Errorf("%s at revision %d", goneKey, e.Revision())
		}
		return nil
	})
	h.wantEventSeq(kv, goneKey)
}

// wantEventSeq fails unless key's entry records the stream sequence of its
// object's last event.
func (h *harness) wantEventSeq(kv jetstream.KeyValue, key string) {
	h.t.Helper()
	ctx := h.t.Context()
	e, err := kv.Get(ctx, key)
	if err != nil {
		h.t.Fatal(err)
	}
	o := &eventsv1.Object{}
	if err := proto.Unmarshal(e.Value(), o); err != nil {
		h.t.Fatal(err)
	}
	res, id, err := events.ParseObjectKey(key)
	if err != nil {
		h.t.Fatal(err)
	}
	s, err := h.js.Stream(ctx, live)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, events.Subject(events.SubjectPrefix, res, events.ProjectID(o), id))
	if err != nil {
		h.t.Fatal(err)
	}
	if o.GetEventSeq() != m.Sequence {
		h.t.Fatalf("%s records event_seq %d, its last event is at %d", key, o.GetEventSeq(), m.Sequence)
	}
}
