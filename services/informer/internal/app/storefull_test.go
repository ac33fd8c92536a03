package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestStoreFull: JetStream's storage fills up (a NATS server at its
// max_file_store, answered "insufficient resources", 10023) while sessions
// are created. The informer keeps every change it owes and retries; its
// lease cannot be renewed either, so it stands by. When space comes back
// (here: the old events expire, as STREAM_MAX_AGE makes them), it leads
// again and publishes what it owed: every session reaches the stream and
// the objects bucket, none is lost.
func TestStoreFull(t *testing.T) {
	t.Parallel()
	h := newHarnessOn(t, testenv.NATSWith(t, natsserver.Options{MaxStore: 4 << 20}))
	h.seed(0, 1)
	a := h.start("a", map[string]string{config.EnvLeaseTTL: "2s"})
	h.waitLeaderReady(a, 30*time.Second)

	// 15 sessions of 200 KiB each, an event and a bucket entry each: more
	// than the 4 MiB the server may store.
	big := strings.Repeat("x", 200<<10)
	for i := range 15 {
		if _, err := h.c.CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: fmt.Sprint("big-", i), ProjectId: proto.String("proj-0000"), Prompt: proto.String(big)}); err != nil {
			t.Fatal(err)
		}
	}
	// The store is full once a publish fails, or once the lease cannot be
	// renewed: whichever write comes first gets "insufficient resources",
	// and a replica that lost its lease publishes nothing more (the test
	// failed now and then when it waited for a publish error only).
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := a.metric("informer_publish_errors_total"); got < 1 && a.isLeader() {
			return fmt.Errorf("%v publish errors and still leading, want the store to be full", got)
		}
		return nil
	})
	before := sessionIDsIn(h.streamEvents(live))
	if len(before) == 15 {
		t.Fatal("all 15 sessions were published: the store never filled, the test proves nothing")
	}
	t.Logf("published before the store was full: %d of 15 sessions", len(before))

	// Space comes back: the old events expire.
	s, err := h.js.Stream(t.Context(), live)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.waitLeaderReady(a, 30*time.Second)
	want := h.apiState()
	testenv.Eventually(t, 60*time.Second, func() error {
		kv, err := h.tryKVObjects(bucket)
		if err != nil {
			return err
		}
		if err := sameState(kv, want); err != nil {
			return fmt.Errorf("objects bucket: %w", err)
		}
		evs, err := h.tryStreamEvents(live)
		if err != nil {
			return err
		}
		after := sessionIDsIn(evs)
		for key := range want {
			res, id, err := events.ParseObjectKey(key)
			if err != nil {
				return err
			}
			if res == eventsv1.Resource_RESOURCE_SESSIONS && !before[id] && !after[id] {
				return fmt.Errorf("session %s never published", id)
			}
		}
		return nil
	})
}

// sessionIDsIn returns the ids of the sessions evs carry.
func sessionIDsIn(evs []*eventsv1.ResourceEvent) map[string]bool {
	out := map[string]bool{}
	for _, ev := range evs {
		if ev.GetResource() == eventsv1.Resource_RESOURCE_SESSIONS {
			out[ev.GetObjectId()] = true
		}
	}
	return out
}
