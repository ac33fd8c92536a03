package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// Acceptance 8 (in process): shutdown stops every runner within the grace,
// leaves no process behind, releases the claims and hands the sessions back
// (phase Pending, condition RunnerManagerShutdown) for a restart.
func TestShutdownStopsAllRunners(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const grace = 200 * time.Millisecond
	rp := e.replica(replicaOpts{grace: grace, noCleanup: true,
		command: []string{"/bin/sh", "-c", `trap "" TERM; ` + demoRunner + ` & while :; do sleep 0.1; done`}})
	var ids []string
	var pids []int
	for i := range 3 {
		s := e.create(fmt.Sprintf("s%d", i))
		ids = append(ids, s.GetMetadata().GetId())
		e.handle(rp, added, s)
	}
	for _, id := range ids {
		e.waitPhase(id, session.PhaseRunning, 10*time.Second)
		rec, err := registry.Get(t.Context(), e.runners, id)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, rec.PID)
	}
	start := time.Now()
	rp.stop(t)
	// The runners ignore SIGTERM: the grace's SIGKILL ends them, or,
	// should the grace not apply, the kill at the end of the shutdown's
	// own bound (grace + 5 s, package supervise). A shutdown shorter than
	// that bound killed them at the grace; it takes about the grace (0.2 s),
	// so load does not push it to 5 s.
	if d := time.Since(start); d >= grace+5*time.Second {
		t.Fatalf("shutdown took %v: the runners were killed at the shutdown's bound, not at the %v grace", d, grace)
	}
	for _, pid := range pids {
		if pidAlive(pid) {
			t.Fatalf("runner %d survived shutdown", pid)
		}
	}
	for _, id := range ids {
		s := e.get(id)
		if session.PhaseOf(s) != session.PhasePending {
			t.Fatalf("phase after shutdown = %q", s.GetPhase())
		}
		if c := condition(t, s, status.CondRunnerStarted); c.Reason != status.ReasonShutdown {
			t.Fatalf("RunnerStarted = %+v", c)
		}
		e.waitNoClaim(id)
	}
}

// Claims of a dead owner are taken over by the sweep: the session is
// restarted (policy restart) or Failed RunnerLost (policy fail); a claim of
// this replica's previous incarnation is recovered the same way.
func TestSweepRecoversDeadOwnersClaims(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		owner  string
		policy string
		phase  session.Phase
		reason string
	}{
		{"dead owner restart", "ghost", LostRestart, session.PhaseRunning, status.ReasonStarted},
		{"dead owner fail", "ghost", LostFail, session.PhaseFailed, status.ReasonRunnerLost},
		{"own previous incarnation", "rm-0", LostRestart, session.PhaseRunning, status.ReasonStarted},
		{"dead owner of a stopping session", "ghost", LostRestart, session.PhaseStopped, status.ReasonStopped},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.create("orphan")
			id := s.GetMetadata().GetId()
			from := session.PhaseRunning
			if tc.phase == session.PhaseStopped {
				from = session.PhaseStopping
			}
			e.setPhase(id, from)
			ep := registry.Endpoint{SessionID: id, ProjectID: "proj", Owner: tc.owner, Host: "127.0.0.1", Port: 1, PID: 999999, StartedAt: time.Now(), State: registry.StateRunning}
			if _, err := registry.Claim(t.Context(), e.runners, ep); err != nil {
				t.Fatal(err)
			}
			rp := e.replica(replicaOpts{lost: tc.policy})
			testenv.Eventually(t, 5*time.Second, func() error {
				got := e.get(id)
				c, ok := status.Conditions(got).Get(status.CondRunnerStarted)
				if session.PhaseOf(got) != tc.phase || !ok || c.Reason != tc.reason {
					return fmt.Errorf("phase %q conditions %s", got.GetPhase(), got.GetConditions())
				}
				return nil
			})
			rec, err := registry.Get(t.Context(), e.runners, id)
			switch tc.phase {
			case session.PhaseRunning:
				if err != nil || rec.Owner != "rm-0" || rec.State != registry.StateRunning || rec.PID == 999999 {
					t.Fatalf("record after restart = %+v, %v", rec, err)
				}
				if rp.mgr.Count() != 1 {
					t.Fatalf("local runners = %d", rp.mgr.Count())
				}
			default:
				e.waitNoClaim(id)
			}
		})
	}
}

// A Running session with no claim anywhere (its runner is gone) is
// recovered on its next event; nothing stays Running with nothing behind it.
func TestRunningWithoutClaimIsRecovered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.create("ghost run")
	id := s.GetMetadata().GetId()
	rp := e.replica(replicaOpts{lost: LostFail})
	e.handle(rp, modified, e.setPhase(id, session.PhaseRunning))
	got := e.waitPhase(id, session.PhaseFailed, 10*time.Second)
	if c := condition(t, got, status.CondRunnerStarted); c.Reason != status.ReasonRunnerLost {
		t.Fatalf("RunnerStarted = %+v", c)
	}
	e.waitNoClaim(id)
}

// A replica whose claim was taken over (it was presumed dead) kills its
// runner without writing anything.
func TestLostClaimKillsLocalRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("stolen")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	// The thief is a live replica (it heartbeats), so nobody takes it back.
	thiefMember, err := claim.NewMembers(e.members, e.nc, "thief", 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	beating := make(chan error, 1)                  // read in cleanup
	go func() { beating <- thiefMember.Run(ctx) }() // owned by this test; ends on cancel
	t.Cleanup(func() {
		cancel()
		if err := <-beating; err != nil {
			t.Error(err)
		}
	})
	if err := thiefMember.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	thief := rec.Endpoint
	thief.Owner, thief.PID = "thief", 1
	if _, err := registry.Register(t.Context(), e.runners, thief, rec.Revision); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if pidAlive(rec.PID) || rp.mgr.Count() != 0 {
			return fmt.Errorf("runner %d still alive", rec.PID)
		}
		return nil
	})
	if got, err := registry.Get(t.Context(), e.runners, id); err != nil || got.Owner != "thief" {
		t.Fatalf("thief's record changed: %+v %v", got, err)
	}
	if p := session.PhaseOf(e.get(id)); p != session.PhaseRunning {
		t.Fatalf("phase written by the loser: %q", p)
	}
}

// The resync starts Pending sessions no event started and recovers Running
// ones without a claim.
func TestResync(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pending := e.create("no event").GetMetadata().GetId()
	running := e.create("lost").GetMetadata().GetId()
	e.setPhase(running, session.PhaseRunning)
	e.replica(replicaOpts{resync: 200 * time.Millisecond})
	e.waitPhase(pending, session.PhaseRunning, 10*time.Second) // after resyncStartDelay
	testenv.Eventually(t, 5*time.Second, func() error {
		got := e.get(running)
		c, ok := status.Conditions(got).Get(status.CondRunnerStarted)
		if session.PhaseOf(got) != session.PhaseRunning || !ok || c.Status != session.StatusTrue || c.Reason != status.ReasonStarted {
			return fmt.Errorf("phase %q conditions %s", got.GetPhase(), got.GetConditions())
		}
		rec, err := registry.Get(t.Context(), e.runners, running)
		if err != nil || rec.State != registry.StateRunning {
			return fmt.Errorf("record %+v %w", rec, err)
		}
		return nil
	})
}

// A NATS restart (JetStream state on disk) loses nothing: the claim
// survives, the runner keeps running, and a later stop works once the
// connection is back.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("survivor")
	id := s.GetMetadata().GetId()
	e.handle(rp, added, s)
	e.waitPhase(id, session.PhaseRunning, 10*time.Second)
	if err := e.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	stopping := e.setPhase(id, session.PhaseStopping)
	testenv.Eventually(t, 10*time.Second, func() error {
		return rp.rec.Handle(t.Context(), group.Message{Event: e.event(modified, stopping), Attempt: 1})
	})
	e.waitPhase(id, session.PhaseStopped, 10*time.Second)
	e.waitNoClaim(id)
}

// A session deleted while no event can reach runner-manager (created and
// deleted while the informers were changing leader: never announced) still
// loses its runner: the resync stops local runners whose session the API
// no longer has. Found by the chaos run (issue 14): the runner stayed.
func TestResyncStopsRunnersOfDeletedSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.create("never announced").GetMetadata().GetId()
	e.replica(replicaOpts{resync: 200 * time.Millisecond})
	e.waitPhase(id, session.PhaseRunning, 10*time.Second) // after resyncStartDelay
	rec := e.startedRecord(id)
	if err := e.client.DeleteSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	e.waitNoClaim(id)
	testenv.Eventually(t, 5*time.Second, func() error {
		if pidAlive(rec.PID) {
			return fmt.Errorf("runner %d alive after its session was deleted", rec.PID)
		}
		return nil
	})
}

// TestCheckStopsRunnersOfSessionsGoneWithoutEvent: a session deleted, and
// another ended, with no event reaching the replica and no resync (the
// case of a session created and deleted while no informer led) stop their
// runners within the runner check's interval.
func TestCheckStopsRunnersOfSessionsGoneWithoutEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{check: 200 * time.Millisecond})
	deleted, ended := e.create("deleted unannounced"), e.create("ended unannounced")
	recDeleted, recEnded := e.startRunning(rp, deleted), e.startRunning(rp, ended)
	if err := e.client.DeleteSession(t.Context(), deleted.GetMetadata().GetId()); err != nil {
		t.Fatal(err)
	}
	e.setPhase(ended.GetMetadata().GetId(), session.PhaseCompleted)
	e.waitNoClaim(deleted.GetMetadata().GetId())
	e.waitNoClaim(ended.GetMetadata().GetId())
	testenv.Eventually(t, 5*time.Second, func() error {
		for _, rec := range []registry.Record{recDeleted, recEnded} {
			if pidAlive(rec.PID) {
				return fmt.Errorf("runner %d of %s alive after its session went", rec.PID, rec.SessionID)
			}
		}
		return nil
	})
	if p := session.PhaseOf(e.get(ended.GetMetadata().GetId())); p != session.PhaseCompleted {
		t.Fatalf("ended session's phase = %s, want Completed left alone", p)
	}
}
