package group_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRejoinsAfterStoreLost: NATS loses the group's streams and buckets
// under two running members (a restart with an empty JetStream store,
// after which the informer re-creates only the events stream). Their
// heartbeats then fail with no stream to answer while connected; after a
// member TTL of that each Run returns ErrGroupStopped, Joined cleared, and
// the rejoin (as service.Consume does it) re-creates the work stream, the
// members bucket and the group config, so events published afterwards are
// handled. Before, the members retried their heartbeats and stayed Joined
// until, by chance, pcgroups' config watcher gave up.
func TestRejoinsAfterStoreLost(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	rejoins := map[string]*atomic.Int32{}
	stats := map[string]*group.Stats{}
	for _, name := range []string{"a", "b"} {
		cfg := testConfig(name)
		stats[name], rejoins[name] = cfg.Stats, &atomic.Int32{}
		_, mjs := testenv.JetStream(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		// Rejoins like service.Consume: Run again after ErrGroupStopped.
		go func() {
			defer close(done)
			for {
				err := group.Run(ctx, mjs, cfg, func(_ context.Context, m group.Message) error {
					j.add(call{member: name, object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
					return nil
				}, testLogger().With("test_member", name))
				if ctx.Err() != nil || !errors.Is(err, group.ErrGroupStopped) {
					return
				}
				if cfg.Stats.Snapshot().Joined {
					t.Errorf("member %s still Joined after Run returned %v", name, err)
				}
				rejoins[name].Add(1)
			}
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	waitMembers(t, js, "a", "b")
	for o := range 4 {
		publish(t, js, fmt.Sprintf("s-%d", o), 1)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := j.successes(); n < 4 {
			return fmt.Errorf("%d of 4 handled before the store was lost", n)
		}
		return nil
	})

	// Restart on an empty store, as after a NATS restart that lost its
	// volume; the informer re-creates the events stream.
	srv.Shutdown()
	if err := os.RemoveAll(srv.StoreDir()); err != nil {
		t.Fatalf("wipe store: %v", err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := bus.EnsureEventsStream(t.Context(), js, 1, 0)
		return err
	})
	lost := time.Now()
	for o := range 4 {
		publish(t, js, fmt.Sprintf("s-%d", o), 2)
	}
	// A rejoin takes a member TTL of failed heartbeats plus a join (about
	// 2 s here). Before, only pcgroups' config watcher giving up on its
	// vanished bucket, after about 20 s here and in production sometimes
	// never, ended Run.
	testenv.Eventually(t, 10*time.Second, func() error {
		handled := 0
		for _, c := range j.snapshot() {
			if c.ok && c.version == 2 {
				handled++
			}
		}
		if handled < 4 {
			return fmt.Errorf("%d of 4 events handled %s after the store was lost (rejoins a=%d b=%d, joined a=%t b=%t)",
				handled, time.Since(lost).Round(time.Second), rejoins["a"].Load(), rejoins["b"].Load(),
				stats["a"].Snapshot().Joined, stats["b"].Snapshot().Joined)
		}
		return nil
	})
	t.Logf("consuming again %s after the store was lost", time.Since(lost).Round(10*time.Millisecond))
	// The events may all be a peer's: each member rejoins on its own
	// member TTL of failed heartbeats, so wait for the slower one.
	testenv.Eventually(t, 10*time.Second, func() error {
		for name, n := range rejoins {
			if n.Load() == 0 {
				return fmt.Errorf("member %s has not rejoined %s after the store was lost", name, time.Since(lost).Round(time.Second))
			}
		}
		return nil
	})
	checkOrder(t, j.snapshot())
}

// TestJetStreamDownIsNotStoreLost: heartbeats answered with no responders
// for longer than MemberTTL while the client stays connected (JetStream
// shut down on the server, as during a stream leader election in a
// cluster, which lasted longer than the chaos suite's MEMBER_TTL after a
// NATS node loss) do not make the member leave and rejoin: a lookup of the
// members bucket does not answer "not found", so Run goes on; once
// JetStream is back (the server restarted with its store) the same Run
// handles events again.
// Before, a whole MemberTTL of no responders was taken for a lost store:
// "consumer group storage gone, rejoining", Run returned ErrGroupStopped.
func TestJetStreamDownIsNotStoreLost(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var logs testenv.Buffer
	var handled atomic.Int32
	cfg := testConfig("a")
	nc, mjs := testenv.JetStream(t, srv)
	m := runMember(t, nc, mjs, cfg, func(context.Context, group.Message) error {
		handled.Add(1)
		return nil
	}, slog.New(slog.NewJSONHandler(&logs, nil)))
	waitMembers(t, js, "a")
	publish(t, js, "s-before", 1)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := handled.Load(); n != 1 {
			return fmt.Errorf("%d events handled, want 1", n)
		}
		return nil
	})

	if err := srv.NATS().ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	// Three MemberTTLs of failed heartbeats (one every MemberTTL/3): past
	// the point where a store taken for lost ended Run.
	const failures = 9
	testenv.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-m.done:
			m.done <- err
			return fmt.Errorf("Run returned while JetStream was down: %v", err)
		default:
		}
		if n := strings.Count(logs.String(), `"msg":"heartbeat failed"`); n < failures {
			return fmt.Errorf("%d failed heartbeats, waiting for %d", n, failures)
		}
		return nil
	})
	if strings.Contains(logs.String(), "storage gone") {
		t.Fatalf("JetStream down taken for a lost store:\n%s", logs.String())
	}
	select {
	case err := <-m.done:
		t.Fatalf("Run returned while JetStream was down: %v", err)
	default:
	}

	// JetStream back: the server restarted with its store (a JetStream
	// shut down on a running server does not come back by itself).
	srv.Shutdown()
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	// The events stream answers again once JetStream has recovered it.
	testenv.Eventually(t, 20*time.Second, func() error {
		_, err := js.PublishMsg(t.Context(), eventMsg(t, t.Context(), "s-after", 1))
		return err
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := handled.Load(); n < 2 {
			return fmt.Errorf("%d events handled after JetStream came back, want 2", n)
		}
		return nil
	})
	select {
	case err := <-m.done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}
