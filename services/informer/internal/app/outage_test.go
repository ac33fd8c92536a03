package app_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestNATSOutageLongerThanLease: NATS is down for longer than the lease
// TTL while the API changes. Nothing is lost or published twice, the
// leader stops while it cannot renew, and when NATS is back the old leader
// leads again: the standby does not take over only because NATS was down
// for everyone (issue 14 point 1, here for the informer's lease).
func TestNATSOutageLongerThanLease(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	h := newHarness(t)
	h.seed(30, 2)
	env := map[string]string{config.EnvLeaseTTL: ttl.String()}
	a := h.start("a", env)
	h.waitLeaderReady(a, 30*time.Second)
	b := h.start("b", env)
	before := len(h.waitConverged(live, bucket, 30*time.Second))
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := b.metric("informer_lease_leader"); got != 0 {
			return fmt.Errorf("b leader gauge = %v, want a standby", got)
		}
		return nil
	})

	h.nats.Shutdown()
	testenv.Eventually(t, 2*ttl, func() error {
		if a.isLeader() {
			return errors.New("a still leads without NATS")
		}
		return nil
	})
	ids := h.sessionIDs()
	for i := range 5 {
		h.createSession(fmt.Sprintf("during-outage-%d", i))
		h.updateSession(ids[i], "changed during the outage")
	}
	h.deleteSession(ids[10])
	h.deleteSession(ids[11])
	// The outage must outlast the lease: that is the scenario, there is no
	// state to wait on.
	<-time.After(ttl + ttl/2)
	if err := h.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	h.waitLeaderReady(a, 30*time.Second)
	evs := h.waitConverged(live, bucket, 60*time.Second)
	wantCounts(t, evs[before:], map[string]int{"sessions/ADDED": 5, "sessions/MODIFIED": 5, "sessions/DELETED": 2})
	if got := b.metric("informer_lease_terms_total"); got != 0 {
		t.Errorf("b led %v terms: it took over because NATS was down for everyone", got)
	}
	if got := a.metric("informer_lease_terms_total"); got != 2 {
		t.Errorf("a led %v terms, want 2 (before and after the outage)", got)
	}
}
