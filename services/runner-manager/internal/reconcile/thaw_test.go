package reconcile

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
)

// A whole node paused (the replica and its runners stopped together for
// longer than MEMBER_TTL) and resumed: a peer took the session over and
// restarted it meanwhile, but nothing has told the thawed replica yet
// (its record watch delivers the takeover a moment after the thaw; here
// neither the watch nor the sweep runs, so only what the replica reads
// itself can tell it). These are the writes it could make in that moment
// for the session it lost; each would clobber the peer's state.

// takeOver writes rm-b's takeover of the session rec names, as the peer's
// sweep does (compare-and-swap on rec's revision), with a runner of rm-b.
func (e *env) takeOver(rec registry.Record) {
	e.t.Helper()
	ep := rec.Endpoint
	ep.Owner, ep.PID, ep.PIDStart, ep.Port = "rm-b", 1, 0, 1
	ep.State, ep.Final = registry.StateRunning, nil
	if _, err := registry.Register(e.t.Context(), e.runners, ep, rec.Revision); err != nil {
		e.t.Fatal(err)
	}
}

// endWithAPIDown makes every status write fail from now on (the API is
// down), kills the runner rec names, and returns its record once the
// replica has recorded in it the final phase it could not write (state
// exited, Final set).
func (e *env) endWithAPIDown(rec registry.Record) registry.Record {
	e.t.Helper()
	e.api.FailNext(ambientv1.SessionService_UpdateSessionStatus_FullMethodName, 1000, codes.Unavailable)
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	var ended registry.Record
	testenv.Eventually(e.t, 10*time.Second, func() error {
		var err error
		if ended, err = registry.Get(e.t.Context(), e.runners, rec.SessionID); err != nil {
			return err
		}
		if ended.State != registry.StateExited || ended.Final == nil {
			return fmt.Errorf("record %+v: final phase not recorded", ended.Endpoint)
		}
		return nil
	})
	return ended
}

// The runner ends right at the thaw (its own timers fire when the node
// resumes), before the replica learned that its claim is rm-b's: the
// lost runner's end is not the session's. Before, the replica wrote
// Failed "ProcessExited: killed by signal killed" over the Running of
// rm-b's runner (and released nothing: Release checks the owner).
func TestLostRunnerEndNotReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{member: "rm-a", noRun: true})
	s := e.create("thawed")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	e.takeOver(rec)
	writes := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName)
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if rp.rec.sup.Get(id) != nil {
			return fmt.Errorf("runner of %s not finished", id)
		}
		return nil
	})
	e.wroteNothing(t, id, writes, session.PhaseRunning)
	if got, err := registry.Get(t.Context(), e.runners, id); err != nil || got.Owner != "rm-b" {
		t.Errorf("record %+v (%v), want rm-b's", got, err)
	}
}

// The peer's restart is under way (phase Creating) when the thawed
// replica's resync or an event finds its runner "drifted": healing the
// phase would write Running with the old runner's start time over
// rm-b's Creating. The replica reads the record first: the runner is
// lost (killed) and nothing is written.
func TestLostRunnerDoesNotHealPhase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{member: "rm-a", noRun: true})
	s := e.create("thawed")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	e.takeOver(rec)
	creating := e.setPhase(id, session.PhaseCreating) // rm-b's restart
	e.handleLost(t, rp, rec, creating)
}

// A stop asked for while the thawed replica still believes it runs the
// session: its runner is stopped, but Stopped is rm-b's to write once
// rm-b's runner has stopped (rm-b handles the same Stopping), not the
// lost runner's.
func TestLostRunnerStopNotReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{member: "rm-a", noRun: true})
	s := e.create("thawed")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	e.takeOver(rec)
	stopping := e.setPhase(id, session.PhaseStopping)
	e.handleLost(t, rp, rec, stopping)
}

// The runner ended while the API was down, so its final phase waits in
// the replica (and in the record) for the sweep's Resend; then the node
// froze. rm-b took the record over, wrote the recorded phase, and the
// user started the session again: rm-b runs it. Resend after the thaw,
// before the record watch tells the replica, would write the old end
// (Failed) over the new run's Running. The owner is read first: nothing
// is written, the runner is forgotten.
func TestLostRunnerPendingEndNotResent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{member: "rm-a", noRun: true})
	id := e.create("thawed").GetMetadata().GetId()
	rec := e.startRunning(rp, e.get(id))
	const update = ambientv1.SessionService_UpdateSessionStatus_FullMethodName
	ended := e.endWithAPIDown(rec)
	if rp.rec.sup.Get(id) == nil {
		t.Fatal("the runner with an unwritten final phase was forgotten")
	}
	e.takeOver(ended)
	e.api.FailNext(update, 0, codes.OK)
	e.setPhase(id, session.PhaseRunning) // rm-b's new run
	writes := e.api.CountCalls(update)
	rp.rec.sup.Resend(t.Context())
	e.wroteNothing(t, id, writes, session.PhaseRunning)
	if rp.rec.sup.Get(id) != nil {
		t.Error("the lost runner is still in the supervisor's list")
	}
	if got, err := registry.Get(t.Context(), e.runners, id); err != nil || got.Owner != "rm-b" {
		t.Errorf("record %+v (%v), want rm-b's", got, err)
	}
}

// As TestLostRunnerPendingEndNotResent, with the record watch and the
// sweep running: the watch hears of rm-b's takeover while the API is
// still down and marks the runner lost, which drops its pending final
// phase. Before, nothing forgot the exited runner then: it held its port,
// the sweep marked it lost again every pass and, once rm-b released the
// record, wrote it back as rm-a's (state exited, with the old final
// phase), and a Pending event for the session did nothing on rm-a
// (audit: the runner still listed after 3 s; 5 s after the Pending
// event, phase Pending and the record rm-a's, exited).
func TestLostPendingRunnerForgotten(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mb, err := claim.NewMembers(e.members, e.nc, "rm-b", 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = mb.Run(t.Context()) }() // rm-b is alive: its record is not recovered; ends with the test
	rp := e.replica(replicaOpts{member: "rm-a", max: 2, ports: 2})
	id := e.create("lost-pending").GetMetadata().GetId()
	rec := e.startRunning(rp, e.get(id))
	rn := rp.rec.sup.Get(id)
	const update = ambientv1.SessionService_UpdateSessionStatus_FullMethodName
	ended := e.endWithAPIDown(rec)
	e.takeOver(ended)
	testenv.Eventually(t, 5*time.Second, func() error {
		if !rn.Lost() {
			return errors.New("the record watch has not marked the runner lost")
		}
		return nil
	})
	// The API stays down: a Resend already under way when the watch
	// marked the runner lost still holds the final phase and fails to
	// write it; the next ones have nothing left to write.
	testenv.Eventually(t, 5*time.Second, func() error {
		if rp.rec.sup.Get(id) != nil || rp.mgr.Pool().InUse() != 0 {
			return fmt.Errorf("lost runner still listed: %v, ports in use %d", rp.rec.sup.Get(id) != nil, rp.mgr.Pool().InUse())
		}
		return nil
	})
	e.api.FailNext(update, 0, codes.OK)
	e.setPhase(id, session.PhaseRunning) // rm-b's new run
	// rm-b's run ends and the session is started again: rm-a runs it.
	if _, err := registry.Release(t.Context(), e.runners, id, "rm-b"); err != nil {
		t.Fatal(err)
	}
	e.setPhase(id, session.PhasePending)
	e.handle(rp, modified, e.get(id))
	e.waitPhase(id, session.PhaseRunning, 5*time.Second)
	got := e.startedRecord(id)
	if got.Owner != "rm-a" || got.PID == rec.PID {
		t.Errorf("record %+v, want rm-a's new runner", got.Endpoint)
	}
}

// The runner's Running write failed (the API was down) and waits for the
// sweep's Resend; then the node froze, rm-b took the session over and is
// restarting it (Creating). Resend after the thaw would write Running
// with the old runner's start time over rm-b's Creating; it reads the
// owner first: the runner is lost (killed) and nothing is written.
func TestLostRunnerUnsentPhaseNotResent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{member: "rm-a", noRun: true})
	s := e.create("thawed")
	id := s.GetMetadata().GetId()
	const update = ambientv1.SessionService_UpdateSessionStatus_FullMethodName
	e.api.FailNext(update, 1000, codes.Unavailable)
	e.handle(rp, added, s)
	// The record says running once onHealthy registered it; its Running
	// write runs under the same session lock: once the lock is free, that
	// write failed.
	rec := e.startedRecord(id)
	rp.rec.sup.Lock(id)()
	e.takeOver(rec)
	e.api.FailNext(update, 0, codes.OK)
	e.setPhase(id, session.PhaseCreating) // rm-b's restart
	writes := e.api.CountCalls(update)
	rp.rec.sup.Resend(t.Context())
	e.wroteNothing(t, id, writes, session.PhaseCreating)
	testenv.Eventually(t, 5*time.Second, func() error {
		if pidAlive(rec.PID) || rp.rec.sup.Get(id) != nil {
			return fmt.Errorf("the lost runner %d still runs", rec.PID)
		}
		return nil
	})
}

// The claims of a frozen (or unreachable) owner are the sweep's to take
// over, 8 at a time. The resync used to take them over itself, one
// session after the other, each probe of a runner that accepts the
// connection and never answers costing the whole probe timeout, while
// the loop that also sweeps waited: with a resync running when a node
// froze, its 10 sessions moved one per second (internal/app
// TestNodeFrozenSessionsMoveOnce, 11.4 s). Now the resync leaves a
// claimed session alone, quickly.
func TestResyncLeavesStaleClaimsToSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{noRun: true})
	// Frozen runners: their connections are accepted, nobody answers. The
	// records' runner counts its connections: a probe is seen as one, not
	// timed (resync's time against the probe timeout is a bound load can
	// cross). The owner check below probes a runner of its own, so that
	// its probes are not counted.
	frozen, probes := silentRunner(t)
	quiet, _ := silentRunner(t)
	var recs []registry.Record
	for i := range 3 {
		id := e.create(fmt.Sprintf("frozen owner %d", i)).GetMetadata().GetId()
		e.setPhase(id, session.PhaseRunning)
		ep := registry.Endpoint{SessionID: id, ProjectID: "proj", Owner: "rm-frozen", Host: "127.0.0.1", Port: frozen,
			PID: 1, StartedAt: time.Now().UTC(), State: registry.StateRunning}
		rev, err := registry.Claim(t.Context(), e.runners, ep)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, registry.Record{Endpoint: ep, Revision: rev})
	}
	// Once the replica is settled the owner is gone: a sweep would take
	// its claims over.
	check := recs[0]
	check.Port = quiet
	testenv.Eventually(t, 10*time.Second, func() error {
		gone, err := rp.rec.claims.OwnerGone(t.Context(), check, false)
		if err != nil || !gone {
			return fmt.Errorf("owner gone %t (%v)", gone, err)
		}
		return nil
	})
	rp.rec.resync(t.Context())
	for _, rec := range recs {
		got, err := registry.Get(t.Context(), e.runners, rec.SessionID)
		if err != nil || got.Owner != "rm-frozen" {
			t.Errorf("record of %s: %+v (%v), want rm-frozen's, left to the sweep", rec.SessionID, got, err)
		}
	}
	// A probe connects at once and waits a probe timeout for its answer
	// before resync goes on: its connection was accepted long before
	// resync returned.
	if n := probes.Load(); n != 0 {
		t.Errorf("resync probed the frozen runners %d times, want 0: it is the sweep's to probe them", n)
	}
}

// silentRunner listens like a frozen runner: it accepts connections and
// never answers. It returns its port and the count of connections it
// accepted.
func silentRunner(t *testing.T) (int, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var conns []net.Conn // held open until the listener is closed
	done := make(chan struct{})
	go func() { // owned by the test; ends when the cleanup closes ln
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close() //nolint:errcheck // best effort: the test is over
		<-done
		for _, c := range conns {
			_ = c.Close() //nolint:errcheck // best effort: the test is over
		}
	})
	return ln.Addr().(*net.TCPAddr).Port, &accepted
}

// handleLost hands rp (which still believes it runs rec's runner) the
// event ev, of a session rm-b owns now, and checks that the lost runner is
// stopped and that rp writes nothing for the session: its phase stays ev's.
func (e *env) handleLost(t *testing.T, rp *replica, rec registry.Record, ev *ambientv1.Session) {
	t.Helper()
	id := ev.GetMetadata().GetId()
	writes := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName)
	e.handle(rp, modified, ev)
	testenv.Eventually(t, 5*time.Second, func() error {
		if pidAlive(rec.PID) || rp.rec.sup.Get(id) != nil {
			return fmt.Errorf("the lost runner %d still runs", rec.PID)
		}
		return nil
	})
	e.wroteNothing(t, id, writes, session.PhaseOf(ev))
}

// wroteNothing checks that no status write reached the API for session id
// since the call count writes, and that its phase is still want, rm-b's.
func (e *env) wroteNothing(t *testing.T, id string, writes int, want session.Phase) {
	t.Helper()
	if n := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName) - writes; n != 0 {
		got := e.get(id)
		t.Errorf("%d status writes for a session rm-b owns: phase %s, conditions %s", n, got.GetPhase(), got.GetConditions())
	}
	if p := session.PhaseOf(e.get(id)); p != want {
		t.Errorf("phase %s, want rm-b's %s", p, want)
	}
}
