package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// jetstreamWatch polls inf's /readyz until the test ends and keeps the
// first body whose "jetstream" check failed: that check fails only while
// the informer re-runs its start-up set-up (repairer.check), and a poll
// every 20 ms sees a set-up that takes at least one JetStream round trip
// while JetStream does not answer.
type jetstreamWatch struct {
	mu     sync.Mutex
	failed string // guarded by mu; first /readyz body with jetstream failing
}

func (w *jetstreamWatch) failure() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func watchJetstreamCheck(t *testing.T, inf *informer) *jetstreamWatch {
	t.Helper()
	w := &jetstreamWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// Owned by the test: cancelled and awaited in Cleanup.
	go func() {
		defer close(done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			_, body, err := inf.httpGet("/readyz")
			if err != nil {
				continue
			}
			var r struct {
				Checks map[string]struct{ Status string } `json:"checks"`
			}
			if json.Unmarshal([]byte(body), &r) != nil || r.Checks["jetstream"].Status != "fail" {
				continue
			}
			w.mu.Lock()
			if w.failed == "" {
				w.failed = body
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

// TestNATSRestartWithStoreRepairsNothing: NATS restarts with its store
// kept while the informer leads, and the informer publishes while
// JetStream is stopping. A server shutting down stops JetStream before it
// closes the client connections, so such a publish gets no responders
// ("no response from stream") from a stream that is not lost; here that
// moment is stretched (JetStream stopped on the running server, then the
// server restarted on the same store) so the publish always falls into
// it. The informer retries the publish: the "jetstream" readiness check
// never fails, the term goes on (no relist, no new term) and the session
// is published once NATS is back. Before, the answer counted as a lost
// stream: the term ended, the set-up ran again (jetstream check failing)
// and the new term relisted, ~12 s unready for nothing.
// TestNATSStoreLostIsRecreated is the same restart with the store lost.
func TestNATSRestartWithStoreRepairsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.seed(3, 1)
	// A renewal every 10 s: the JetStream stop below lands right after
	// one, so no renewal fails meanwhile (its failure ends the term by
	// design, which would hide what this test looks at).
	a := h.start("a", map[string]string{config.EnvLeaseTTL: "30s"})
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	// The term's lists: each resource's first and, once its watch is
	// open, the confirming one; no resync (RESYNC_PERIOD 0).
	const relists = 2 * 3
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := a.metric("informer_relists_total"); got != relists {
			return fmt.Errorf("relists %v, want %v", got, relists)
		}
		return nil
	})
	js := watchJetstreamCheck(t, a)
	terms, publishErrs := a.metric("informer_lease_terms_total"), a.metric("informer_publish_errors_total")
	if terms != 1 || publishErrs < 0 {
		t.Fatalf("before the restart: terms %v, publish errors %v", terms, publishErrs)
	}
	waitLeaseRenewed(t, h, config.DefaultLeaseKey)

	if err := h.nats.NATS().ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	id := h.createSession("while-jetstream-stops").GetMetadata().GetId()
	// The publish got no responders: retried (a failed publish), or, the
	// fault, taken for a lost stream (the set-up runs again).
	testenv.Eventually(t, 5*time.Second, func() error {
		if js.failure() != "" || a.metric("informer_publish_errors_total") > publishErrs {
			return nil
		}
		return errors.New("no publish attempted while JetStream is stopped")
	})
	if err := h.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error { return h.published(id) })
	h.waitLeaderReady(a, 30*time.Second)

	if body := js.failure(); body != "" {
		t.Errorf("the jetstream readiness check failed (the set-up ran again) after a restart that kept the store: %s", body)
	}
	if got := a.metric("informer_relists_total"); got != relists {
		t.Errorf("relists %v, want %v: the term ended and a new one relisted", got, relists)
	}
	if got := a.metric("informer_lease_terms_total"); got != terms {
		t.Errorf("lease terms %v, want %v", got, terms)
	}
}

// waitLeaseRenewed waits for the leader's next write of the lease key.
func waitLeaseRenewed(t *testing.T, h *harness, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, bus.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }() // best effort in a test helper
	select {
	case e := <-w.Updates():
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			t.Fatalf("lease key %s: %v instead of a renewal", key, e)
		}
	case <-ctx.Done():
		t.Fatal(fmt.Errorf("no renewal of lease key %s: %w", key, ctx.Err()))
	}
}
