package group_test

import (
	"context"
	"fmt"
	"testing"
	"time"

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
