package app_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReleasedPortWaitsOutReuseDelay: a replica's only runner port, given
// back when its session stopped, goes to no other session's runner within
// PORT_REUSE_DELAY (agui-proxy cut off from NATS may still route the
// stopped session's clients there): the next session waits for capacity
// (RunnerStarted False, NoPortAvailable, the message naming the setting)
// instead of starting on it. Before, it started at once on the port.
func TestReleasedPortWaitsOutReuseDelay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.start("rm-reuse", 1, "PORT_REUSE_DELAY=1h")
	first := w.create("First")
	w.waitAll([]string{first}, "Running", 20*time.Second)
	rest, err := apiclient.NewREST(apiclient.RESTConfig{URL: w.api.RESTURL(), Token: w.api.Token()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest.StopSession(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	w.waitAll([]string{first}, "Stopped", 20*time.Second)
	// The port is given back once the record no longer names it.
	testenv.Eventually(t, 20*time.Second, func() error {
		if rec, err := w.record(first); err == nil && rec.Port != 0 {
			return fmt.Errorf("%s's record still names port %d", first, rec.Port)
		}
		return nil
	})
	second := w.create("Second")
	testenv.Eventually(t, 30*time.Second, func() error {
		s := w.get(second)
		conds, err := session.ParseConditions(s.GetConditions())
		if err != nil {
			return err
		}
		c, _ := conds.Get("RunnerStarted")
		if c.Status != session.StatusFalse || c.Reason != "NoPortAvailable" || !strings.Contains(c.Message, "PORT_REUSE_DELAY") {
			return fmt.Errorf("%s: phase %q, RunnerStarted %+v; want it waiting for a port, NoPortAvailable naming PORT_REUSE_DELAY", second, s.GetPhase(), c)
		}
		return nil
	})
	if p := session.PhaseOf(w.get(second)); p == session.PhaseRunning {
		t.Errorf("%s is Running on the port %s gave back within PORT_REUSE_DELAY", second, first)
	}
}
