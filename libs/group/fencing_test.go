package group_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// gatedDialer refuses new connections while closed, so a test decides
// when a client comes back after an outage.
type gatedDialer struct{ closed atomic.Bool }

func (d *gatedDialer) Dial(network, address string) (net.Conn, error) {
	if d.closed.Load() {
		return nil, errors.New("gated")
	}
	var nd net.Dialer
	// nats.CustomDialer passes no ctx; nats.Timeout bounds the dial.
	return nd.DialContext(context.Background(), network, address)
}

// revision returns the revision of key in kv, 0 when it is missing.
func revision(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	return e.Revision(), nil
}

// TestOutageIsNotADeath (issue 14, finding 1, for group membership): NATS
// is down for longer than MemberTTL, so every heartbeat expires. The
// member that reconnects first must not count its peer dead and take its
// partitions: when the peer is back within a TTL of our reconnect, the
// mapping written before the outage stays and each member handles its own
// objects after it. A peer that does not come back is dead, and its
// partitions move, but not before a TTL after our own reconnect.
func TestOutageIsNotADeath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		peerReturns bool
	}{
		{name: "peer back within a ttl", peerReturns: true},
		{name: "peer never back", peerReturns: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			outage(t, tc.peerReturns)
		})
	}
}

func outage(t *testing.T, peerReturns bool) {
	t.Helper()
	srv, js := setup(t)
	cfg := func(name string) group.Config {
		c := testConfig(name)
		c.MemberTTL = 2 * time.Second
		return c
	}
	ttl := cfg("a").MemberTTL
	var j journal
	record := func(name string) group.Handler {
		return func(_ context.Context, m group.Message) error {
			j.add(call{member: name, object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
			return nil
		}
	}
	startMember(t, srv, cfg("a"), record("a"))
	gate := &gatedDialer{}
	bnc, bjs := testenv.JetStream(t, srv, nats.SetCustomDialer(gate))
	runMember(t, bnc, bjs, cfg("b"), record("b"), testLogger())
	before := waitMembers(t, js, "a", "b")

	configs, err := js.KeyValue(t.Context(), "elastic-consumer-groups")
	if err != nil {
		t.Fatalf("config bucket: %v", err)
	}
	configKey := events.StreamName + "." + testGroup
	configRev, err := revision(t.Context(), configs, configKey)
	if err != nil {
		t.Fatal(err)
	}

	gate.closed.Store(true)
	srv.Shutdown()
	// The fault is an outage of this length: nothing to poll while the
	// server is down. Longer than the TTL, so every heartbeat expires.
	<-time.After(ttl * 3 / 2)
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	restarted := time.Now()
	members, err := js.KeyValue(t.Context(), group.MembersBucketName(events.StreamName, testGroup))
	if err != nil {
		t.Fatalf("members bucket: %v", err)
	}
	// b's key expired during the outage: to a, b looks dead.
	testenv.Eventually(t, 10*time.Second, func() error {
		if rev, err := revision(t.Context(), members, "b"); err != nil || rev != 0 {
			return fmt.Errorf("b's heartbeat still there (rev %d, %v)", rev, err)
		}
		return nil
	})
	// a reconnects first and heartbeats twice; it reconciles after every
	// heartbeat, so it has done so at least once while b's key is missing.
	var first uint64
	var firstSeen time.Time
	testenv.Eventually(t, 10*time.Second, func() error {
		rev, err := revision(t.Context(), members, "a")
		if err != nil || rev == 0 {
			return fmt.Errorf("a has not heartbeated since the restart (%v)", err)
		}
		if first == 0 {
			first, firstSeen = rev, time.Now()
		}
		if rev == first {
			return errors.New("waiting for a's second heartbeat")
		}
		return nil
	})

	if !peerReturns {
		// b is dead: a takes everything, a TTL after its reconnect.
		testenv.Eventually(t, 5*ttl, func() error {
			c, err := pcgroups.GetElasticConsumerGroupConfig(t.Context(), js, events.StreamName, testGroup)
			if err != nil {
				return err
			}
			if len(c.MemberMappings) != 1 || c.MemberMappings[0].Member != "a" {
				return fmt.Errorf("mapping %v, want a alone", c.MemberMappings)
			}
			return nil
		})
		// firstSeen is after a's first heartbeat since the restart, so
		// this lower bound holds however slow the machine is.
		if took := time.Since(firstSeen); took < ttl-ttl/3 {
			t.Fatalf("partitions moved %s after a's reconnect, want no sooner than a ttl (%s)", took, ttl)
		}
		t.Logf("dead peer's partitions moved %s after the restart (ttl %s)", time.Since(restarted).Round(time.Millisecond), ttl)
		return
	}

	gate.closed.Store(false)
	testenv.Eventually(t, 10*time.Second, func() error {
		if rev, err := revision(t.Context(), members, "b"); err != nil || rev == 0 {
			return fmt.Errorf("b not back (%v)", err)
		}
		return nil
	})
	t.Logf("b back %s after the restart", time.Since(restarted).Round(time.Millisecond))
	// Let a TTL and more pass with both members live and fenced no more:
	// four more heartbeats of a.
	last, err := revision(t.Context(), members, "a")
	if err != nil {
		t.Fatal(err)
	}
	beats := 0
	testenv.Eventually(t, 15*time.Second, func() error {
		rev, err := revision(t.Context(), members, "a")
		if err != nil {
			return err
		}
		if rev != last {
			beats++
			last = rev
		}
		if beats < 4 {
			return fmt.Errorf("%d heartbeats of a so far", beats)
		}
		return nil
	})
	if rev, err := revision(t.Context(), configs, configKey); err != nil || rev != configRev {
		after, _ := pcgroups.GetElasticConsumerGroupConfig(t.Context(), js, events.StreamName, testGroup)
		t.Fatalf("group config rewritten after the outage (revision %d -> %d, %v): %v, before %v", configRev, rev, err, after.MemberMappings, before)
	}

	// Each member still handles its own objects.
	for o := range 16 {
		publish(t, js, fmt.Sprintf("obj-%02d", o), 1)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := j.successes(); n < 16 {
			return fmt.Errorf("%d of 16 handled", n)
		}
		return nil
	})
	for _, c := range j.snapshot() {
		owner := "a"
		if slices.Contains(partitionsIn(before, "b"), group.PartitionOf(c.object, 8)) {
			owner = "b"
		}
		if c.member != owner {
			t.Errorf("object %s handled by %s, its owner before the outage was %s", c.object, c.member, owner)
		}
	}
}
