package app

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
)

// TestQueuedEventsCoalesced (issue 15): the reconciler is level-triggered,
// so the events of one session that queue up behind its running (here:
// failing, Kubernetes being unreachable) handler are handled by one call
// with the newest, and all are acked. After the outage the CR holds the last
// prompt, and the consumer group counts the coalesced events; without
// group.Config.Coalesce each would have been handled on its own.
func TestQueuedEventsCoalesced(t *testing.T) {
	h := newHarness(t)
	outage, restCfg := kubetest.Behind(t, restricted(t, h.env))
	r := h.start(t, "coalesce1", restCfg, nil)
	ctx := t.Context()
	name := unique("coalesce")
	h.project(t, name)
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(name), Prompt: ptr("v0")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	h.waitCR(t, name, lower(id), nil)
	h.quiesce(t, r)

	outage.Down()
	retried := r.stats.Snapshot().Retried
	const updates = 5
	for i := 1; i <= updates; i++ {
		prompt := fmt.Sprint("v", i)
		if _, err := h.cl.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Prompt: ptr(prompt)}); err != nil {
			t.Fatal(err)
		}
		// One event per update: the API's watch sends the object as it is
		// when the event goes out (as the real server does), so updates
		// made faster than the feed reads them arrive as fewer events, and
		// fewer than five would never be held (seen under load).
		h.waitPublished(t, id, prompt)
	}
	// The first update's handler fails and retries in its lane; the others
	// are delivered meanwhile and wait behind it. Kubernetes comes back
	// only once all of them are held: ended at the first retry, the
	// outage could be over before the later updates arrive, and each
	// would then get a handler call of its own (seen once in CI).
	testenv.Eventually(t, wait, func() error {
		st := r.stats.Snapshot()
		// The whole snapshot on failure: which way an update left the
		// lane (acked, dead-lettered, coalesced) or never came (delivered).
		if got := st.Retried - retried; got < 1 {
			return fmt.Errorf("%d retries (%+v)", got, st)
		}
		if st.InFlight < updates {
			return fmt.Errorf("%d of %d updates held (%+v)", st.InFlight, updates, st)
		}
		return nil
	})
	outage.Up()
	want := fmt.Sprint("v", updates)
	h.waitCR(t, name, lower(id), func(u *unstructured.Unstructured) error {
		if got, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); got != want {
			return fmt.Errorf("initialPrompt %q, want %q", got, want)
		}
		return nil
	})
	h.quiesce(t, r)
	if got := r.stats.Snapshot().Coalesced; got == 0 {
		t.Errorf("no event coalesced: %+v", r.stats.Snapshot())
	}
	if got := r.stats.Snapshot().DeadLettered; got != 0 {
		t.Errorf("%d events dead-lettered", got)
	}
	// The runtime exports the group's own metrics (issue 13), coalescing
	// included.
	found := false
	for line := range strings.Lines(get(t, "http://"+r.addr.String()+"/metrics")) {
		if strings.HasPrefix(line, "consumer_group_coalesced_total{") && strings.Contains(line, `group="kube-reconciler"`) {
			found = true
			if fields := strings.Fields(line); fields[len(fields)-1] == "0" {
				t.Errorf("consumer_group_coalesced_total is 0: %s", line)
			}
		}
	}
	if !found {
		t.Error("/metrics has no consumer_group_coalesced_total of group kube-reconciler")
	}
}

// waitPublished waits until the feed has published the session with this
// prompt: its entry in the objects bucket, written after its event, has it.
func (h *harness) waitPublished(t *testing.T, id, prompt string) {
	t.Helper()
	kv, err := h.js.KeyValue(t.Context(), bus.BucketObjects)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		e, err := kv.Get(t.Context(), events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, id))
		if err != nil {
			return err
		}
		var o eventsv1.Object
		if err := proto.Unmarshal(e.Value(), &o); err != nil {
			return err
		}
		s, ok := events.Unwrap[*ambientv1.Session](&o)
		if !ok || s.GetPrompt() != prompt {
			return fmt.Errorf("session %s published with prompt %q, want %q", id, s.GetPrompt(), prompt)
		}
		return nil
	})
}
