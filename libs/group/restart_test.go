package group_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestSurvivesServerRestart: the NATS server restarts (same store, same
// port) under a running member; events published before and after are all
// handled.
func TestSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	startMember(t, srv, testConfig("a"), func(_ context.Context, m group.Message) error {
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	for o := range 5 {
		publish(t, js, fmt.Sprintf("s-%d", o), 1)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := j.successes(); n < 5 {
			return fmt.Errorf("%d of 5 handled before restart", n)
		}
		return nil
	})
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	restarted := time.Now()
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := js.Stream(t.Context(), "AMBIENT_EVENTS")
		return err
	})
	for o := range 5 {
		publish(t, js, fmt.Sprintf("s-%d", o), 2)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := j.successes(); n < 10 {
			return fmt.Errorf("%d of 10 handled after restart", n)
		}
		return nil
	})
	t.Logf("consuming again %s after the restart", time.Since(restarted).Round(10*time.Millisecond))
	checkOrder(t, j.snapshot())
}

// TestRecreatesDeletedConsumer: a member's consumer deleted under it (as
// after a long pause past its idle timeout) comes back through the
// watchdog, and consumption resumes.
func TestRecreatesDeletedConsumer(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	var j journal
	startMember(t, srv, testConfig("a"), func(_ context.Context, m group.Message) error {
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	if err := js.DeleteConsumer(t.Context(), group.WorkStreamName("AMBIENT_EVENTS", testGroup), "a"); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	deleted := time.Now()
	publish(t, js, "s-1", 1)
	testenv.Eventually(t, 20*time.Second, func() error {
		if j.successes() < 1 {
			return fmt.Errorf("not handled %s after the consumer was deleted", time.Since(deleted).Round(time.Millisecond))
		}
		return nil
	})
	t.Logf("consuming again %s after the consumer was deleted", time.Since(deleted).Round(10*time.Millisecond))
}

// TestWatchdogUsesBucketTTL: a member whose MemberTTL is below the members
// bucket's (a canary or a rolling update with a lower MEMBER_TTL; the
// bucket's TTL is never lowered) beats and fences by the bucket's TTL, and
// its watchdog must judge by it too: a consumer missing under it is
// re-created once it has been missing for the bucket's TTL plus a
// heartbeat (with this AckWait), as on every other member. Before, the
// watchdog used the configured TTL and re-created it after 0.6 s + 0.2 s
// (at its next check: 1.0 s after the delete; now 5.0 s). Harmless in
// itself (an early restart only retries the create sooner), but the
// liveness rules must not differ between members of one group.
func TestWatchdogUsesBucketTTL(t *testing.T) {
	t.Parallel()
	srv, js := setup(t)
	const bucketTTL = 3 * time.Second
	if _, _, err := bus.EnsureKVKeepTTL(t.Context(), js, jetstream.KeyValueConfig{
		Bucket: group.MembersBucketName(events.StreamName, testGroup), TTL: bucketTTL, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("a")
	cfg.MemberTTL = 600 * time.Millisecond
	var j journal
	startMember(t, srv, cfg, func(_ context.Context, m group.Message) error {
		j.add(call{member: "a", object: m.Event.GetObjectId(), version: version(m), attempt: m.Attempt, ok: true})
		return nil
	})
	waitMembers(t, js, "a")
	// Consuming: the member's own create of its consumer is over. A
	// delete while that create is in flight fails the create ("consumer
	// closed"), and the consumer library retries it at once: a re-create
	// this test would blame on the watchdog (seen in CI: 420 ms).
	publish(t, js, "s-1", 1)
	testenv.Eventually(t, 20*time.Second, func() error {
		if j.successes() < 1 {
			return errors.New("the member handles nothing yet")
		}
		return nil
	})
	ws := group.WorkStreamName(events.StreamName, testGroup)
	if err := js.DeleteConsumer(t.Context(), ws, "a"); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	deleted := time.Now()
	var back time.Duration
	testenv.Eventually(t, 20*time.Second, func() error {
		if _, err := js.Consumer(t.Context(), ws, "a"); err != nil {
			return fmt.Errorf("consumer not re-created: %w", err)
		}
		back = time.Since(deleted)
		return nil
	})
	t.Logf("consumer re-created %s after the delete", back.Round(10*time.Millisecond))
	if back < bucketTTL {
		t.Errorf("consumer re-created %s after the delete, before the bucket's TTL %s: the watchdog judged by the configured %s",
			back.Round(10*time.Millisecond), bucketTTL, cfg.MemberTTL)
	}
}
