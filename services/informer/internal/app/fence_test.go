package app_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// TestPartitionedLeaderPublishesNothingLate: the leader alone loses NATS
// while a session changes twice. It must not leave an event behind that
// NATS receives once the partition heals: the standby has taken over and
// published the newer state meanwhile, and a late event of the old leader
// would give consumers an older state after a newer one. nats.go keeps what
// is published while reconnecting in its reconnect buffer and sends it
// after the reconnect, so the informer does not publish while reconnecting.
func TestPartitionedLeaderPublishesNothingLate(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	h := newHarness(t)
	h.seed(5, 1)
	p := newProxy(t, strings.TrimPrefix(h.nats.ClientURL(), "nats://"))
	env := map[string]string{config.EnvLeaseTTL: ttl.String()}
	a := h.start("a", map[string]string{config.EnvLeaseTTL: ttl.String(), bus.EnvNATSURL: "nats://" + p.addr})
	h.waitLeaderReady(a, 30*time.Second)
	b := h.start("b", env)
	h.waitConverged(live, bucket, 30*time.Second)
	x := h.sessionIDs()[0]

	p.cut()
	h.updateSession(x, "v2: while the leader is cut off")
	testenv.Eventually(t, 2*ttl, func() error {
		if a.isLeader() {
			return errors.New("a still leads")
		}
		return nil
	})
	h.updateSession(x, "v3: after the leader lost its lease")
	h.waitLeaderReady(b, 30*time.Second)
	h.waitEvent(live, 0, "v3 from the new leader", func(e rawEvent) bool {
		return e.ev.GetObjectId() == x && e.ev.GetObject().GetSession().GetPrompt() == "v3: after the leader lost its lease"
	})

	p.heal()
	testenv.Eventually(t, 30*time.Second, func() error {
		if code, body, err := a.httpGet("/readyz"); err != nil || code != 200 {
			return fmt.Errorf("a not reconnected: %d %s %v", code, body, err)
		}
		return nil
	})
	// A late event would arrive right after the reconnect; give it the
	// time to, then look.
	late := testenv.Poll(2*time.Second, func() error {
		var last string
		for _, e := range h.rawEvents(live) {
			if e.ev.GetObjectId() != x {
				continue
			}
			if v := e.ev.GetVersion(); last != "" && events.Newer(last, v) {
				return nil
			} else if v != "" {
				last = v
			}
		}
		return errors.New("no event older than its predecessor")
	})
	if late == nil {
		t.Fatal("an event of the partitioned old leader landed after the new leader's newer one")
	}
}

// TestUnconfirmedLeaderPublishesNothing: a leader whose lease write may
// have expired (as after a pause of its process longer than the TTL: its
// next renewal has not failed yet, so it still leads) publishes nothing
// until a renewal confirms the lease again. The clock its elector reads
// jumps a TTL at every reading, so no renewal ever looks recent, while the
// renewals themselves succeed and the replica stays leader.
func TestUnconfirmedLeaderPublishesNothing(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	var jumping atomic.Bool
	var jumps atomic.Int64
	clock := func() time.Time {
		if !jumping.Load() {
			return time.Now()
		}
		return time.Now().Add(time.Duration(jumps.Add(1)) * ttl)
	}
	h := newHarness(t)
	h.seed(3, 1)
	a := h.start("a", map[string]string{config.EnvLeaseTTL: ttl.String()}, app.WithLeaseClock(clock))
	h.waitLeaderReady(a, 30*time.Second)
	h.waitConverged(live, bucket, 30*time.Second)
	x := h.sessionIDs()[0]

	jumping.Store(true)
	const prompt = "v2: while the lease is unconfirmed"
	h.updateSession(x, prompt)
	published := func(e rawEvent) bool {
		return e.ev.GetObjectId() == x && e.ev.GetObject().GetSession().GetPrompt() == prompt
	}
	early := testenv.Poll(2*ttl, func() error {
		for _, e := range h.rawEvents(live) {
			if published(e) {
				return nil
			}
		}
		return errors.New("not published")
	})
	if early == nil {
		t.Fatal("the change was published while the leader's lease was unconfirmed")
	}
	if !a.isLeader() {
		t.Fatal("a lost the lease: the renewals were meant to succeed")
	}
	jumping.Store(false)
	h.waitEvent(live, 0, "the change once the lease is confirmed", published)
}
