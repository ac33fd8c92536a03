package app_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// stopAndFreePort stops session id through REST and waits until its record
// no longer names a port (the pool has it back, cooling).
func stopAndFreePort(t *testing.T, w *world, id string) {
	t.Helper()
	rest, err := apiclient.NewREST(apiclient.RESTConfig{URL: w.api.RESTURL(), Token: w.api.Token()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest.StopSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	w.waitAll([]string{id}, "Stopped", 20*time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		if rec, err := w.record(id); err == nil && rec.Port != 0 {
			return fmt.Errorf("%s's record still names port %d", id, rec.Port)
		}
		return nil
	})
}

// runnerStarted returns the session's phase and RunnerStarted condition.
func runnerStarted(t *testing.T, w *world, id string) (string, session.Condition) {
	t.Helper()
	s := w.get(id)
	conds, err := session.ParseConditions(s.GetConditions())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := conds.Get("RunnerStarted")
	return s.GetPhase(), c
}

// TestDeferredStartWokenWhenReuseDelayEnds: a session deferred only
// because the replica's port waits out PORT_REUSE_DELAY starts when the
// delay ends, with no resync (RUNNER_RESYNC_INTERVAL=0) and no runner
// ending to wake the capacity queue. Before, nothing woke the queue then:
// the session stayed Pending for good although the port was reusable.
// The 90 s wait is a hang guard (the delay is 10 s).
func TestDeferredStartWokenWhenReuseDelayEnds(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.start("rm-wake", 1, "PORT_REUSE_DELAY=10s", "RUNNER_RESYNC_INTERVAL=0")
	first := w.create("First")
	w.waitAll([]string{first}, "Running", 20*time.Second)
	stopAndFreePort(t, w, first)
	second := w.create("Second")
	testenv.Eventually(t, 30*time.Second, func() error {
		p, c := runnerStarted(t, w, second)
		if p == "Running" {
			t.Skip("second session started after the delay had ended: proved nothing; rerun")
		}
		if c.Reason != "NoPortAvailable" {
			return fmt.Errorf("%s: phase %q RunnerStarted %+v; want NoPortAvailable", second, p, c)
		}
		return nil
	})
	w.waitAll([]string{second}, "Running", 90*time.Second)
}
