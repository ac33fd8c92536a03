package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// touch creates an empty file (a test runner's gate).
func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// lines counts the lines of a file ("" when missing).
func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// Issue 14 review: a runner that exits 0 while the API is down. Before,
// the Completed write failed, the claim was released anyway, the session
// stayed Running with nothing behind it, and the next resync started the
// finished task again. Now the claim stays (with the final phase in its
// record) until Completed is written; nothing starts twice.
func TestCompletedWhileAPIDownIsNotRerun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	starts, gate := filepath.Join(dir, "starts"), filepath.Join(dir, "exit")
	script := fmt.Sprintf(`echo start >> %s; %s & pid=$!; while [ ! -f %s ]; do sleep 0.05; done; kill $pid; wait $pid; exit 0`, starts, demoRunner, gate)
	rp := e.replica(replicaOpts{command: []string{"/bin/sh", "-c", script}, resync: 200 * time.Millisecond})
	s := e.create("finishes")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	// More failures than one report's retries: before the fix the write
	// gave up, released the claim and the resync restarted the session.
	e.api.FailNext(ambientv1.SessionService_UpdateSessionStatus_FullMethodName, 15, codes.Unavailable)
	touch(t, gate)
	testenv.Eventually(t, 10*time.Second, func() error {
		if pidAlive(rec.PID) {
			return fmt.Errorf("runner %d still alive", rec.PID)
		}
		return nil
	})
	got := e.waitPhase(id, session.PhaseCompleted, 30*time.Second)
	if c := condition(t, got, status.CondRunnerStarted); c.Reason != status.ReasonCompleted {
		t.Fatalf("RunnerStarted = %+v", c)
	}
	e.waitNoClaim(id)
	if n := lines(t, starts); n != 1 {
		t.Fatalf("runner started %d times, want once", n)
	}
}

// A record whose runner exited with its final phase unwritten (the owner
// died before it could write it) is finished by the replica that takes it
// over: the recorded phase is written, nothing is started.
func TestRecordedFinalPhaseWrittenByTaker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.create("ended elsewhere")
	id := s.GetMetadata().GetId()
	e.setPhase(id, session.PhaseRunning)
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	ep := registry.Endpoint{SessionID: id, ProjectID: "proj", Owner: "ghost", StartedAt: time.Now(), State: registry.StateExited,
		Final: &registry.Final{Phase: string(session.PhaseFailed), Reason: status.ReasonProcessExited, Message: "ProcessExited: exit code 3", At: at}}
	if _, err := registry.Claim(t.Context(), e.runners, ep); err != nil {
		t.Fatal(err)
	}
	rp := e.replica(replicaOpts{})
	got := e.waitPhase(id, session.PhaseFailed, 10*time.Second)
	if c := condition(t, got, status.CondRunnerStarted); c.Reason != status.ReasonProcessExited || c.Message != "ProcessExited: exit code 3" {
		t.Fatalf("RunnerStarted = %+v", c)
	}
	if !got.GetCompletionTime().AsTime().Equal(at) {
		t.Fatalf("completion_time %v, want the runner's %v", got.GetCompletionTime().AsTime(), at)
	}
	e.waitNoClaim(id)
	if rp.mgr.Count() != 0 {
		t.Fatalf("%d runners started for a finished session", rp.mgr.Count())
	}
}

// Issue 14 review: a user's Stopping overwritten by our own Running write
// was lost (the Stopping event then read Running and looked stale).
func TestStopNotOverwrittenByRunning(t *testing.T) {
	t.Parallel()

	// Stopping written while the runner is still in its health check: the
	// Running write reads the session first and obeys the Stopping.
	t.Run("before the write", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		gate := filepath.Join(t.TempDir(), "healthy")
		script := fmt.Sprintf(`while [ ! -f %s ]; do sleep 0.02; done; exec %s`, gate, demoRunner)
		rp := e.replica(replicaOpts{command: []string{"/bin/sh", "-c", script}})
		s := e.create("stop early")
		id := s.GetMetadata().GetId()
		e.handle(rp, added, s)
		e.waitPhase(id, session.PhaseCreating, 5*time.Second)
		stopping := e.setPhase(id, session.PhaseStopping) // its event comes later
		touch(t, gate)
		testenv.Eventually(t, 10*time.Second, func() error {
			if rp.mgr.Count() != 0 {
				return fmt.Errorf("%d runners alive", rp.mgr.Count())
			}
			return nil
		})
		e.handle(rp, modified, stopping)
		e.waitPhase(id, session.PhaseStopped, 5*time.Second)
	})

	// Stopping written between the read and the write (the API has no
	// precondition): the Running write replaces it, and the Stopping's
	// event, stamped inside the write's window, still stops the runner.
	t.Run("inside the window", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		racer := &stopRacer{sessionAPI: e.client, client: e.client, done: make(chan struct{})}
		rp := e.replica(replicaOpts{api: racer})
		s := e.create("stop racing")
		id := s.GetMetadata().GetId()
		e.handle(rp, added, s)
		stopping := racer.wait(t)
		if p := session.PhaseOf(e.get(id)); p != session.PhaseRunning {
			t.Fatalf("phase %q: the race did not happen as staged", p)
		}
		e.handle(rp, modified, stopping)
		e.waitPhase(id, session.PhaseStopped, 10*time.Second)
		if rp.mgr.Count() != 0 {
			t.Fatalf("%d runners alive", rp.mgr.Count())
		}
	})

	// Stopping written inside the window of the Creating write, its event
	// handled only after the Running write (the health check passed
	// meanwhile): the Stopping was overwritten by the Creating write, not
	// by the last one, and must still stop the runner. Before, only the
	// last write's window was kept, the event looked stale, and the
	// session stayed Running.
	t.Run("inside an earlier write's window", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		racer := &stopRacer{sessionAPI: e.client, client: e.client, done: make(chan struct{}), phase: session.PhaseCreating}
		rp := e.replica(replicaOpts{api: racer})
		s := e.create("stop racing creating")
		id := s.GetMetadata().GetId()
		e.handle(rp, added, s)
		stopping := racer.wait(t)
		e.waitPhase(id, session.PhaseRunning, 10*time.Second)
		e.handle(rp, modified, stopping)
		e.waitPhase(id, session.PhaseStopped, 10*time.Second)
		if rp.mgr.Count() != 0 {
			t.Fatalf("%d runners alive", rp.mgr.Count())
		}
	})
}

// stopRacer is the API with a user who writes Stopping just before the
// service's first write of phase (zero: Running) reaches the server.
type stopRacer struct {
	sessionAPI
	phase  session.Phase
	client interface {
		UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
	}
	once     sync.Once
	done     chan struct{} // closed after the user's write and the service's Running write
	mu       sync.Mutex
	stopping *ambientv1.Session // guarded by mu; the user's write as returned
}

func (r *stopRacer) UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	racing := false
	phase := r.phase
	if phase == session.PhaseNone {
		phase = session.PhaseRunning
	}
	if req.GetPhase() == string(phase) {
		r.once.Do(func() {
			racing = true
			s, err := r.client.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: req.GetId(), Phase: session.PhaseStopping.Ptr()})
			if err == nil {
				r.mu.Lock()
				r.stopping = s
				r.mu.Unlock()
			}
		})
	}
	out, err := r.sessionAPI.UpdateSessionStatus(ctx, req)
	if racing {
		close(r.done)
	}
	return out, err
}

// wait returns the user's Stopping once the service's raced write went
// through.
func (r *stopRacer) wait(t *testing.T) *ambientv1.Session {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no raced write")
	}
	var s *ambientv1.Session
	testenv.Eventually(t, 5*time.Second, func() error {
		r.mu.Lock()
		s = r.stopping
		r.mu.Unlock()
		if s == nil {
			return fmt.Errorf("user's Stopping not written")
		}
		return nil
	})
	return s
}

// Issue 14 review: a runner whose first registration failed stayed
// unroutable for its whole life (the record kept state claimed, no host).
// Here NATS is down from just after the claim until the session is
// Running; once NATS is back, the sweep registers the endpoint.
//
// "late start": the replica's Hold goroutine starts late, as on a loaded
// machine. The harness used to hand the replica over before Hold's first
// beat; the outage then failed that beat, Hold never called Run, and with
// no sweep nothing retried the registration (the record stayed
// "starting": the one CI failure of this test).
//
// The outage must end within the start deadline (the health deadline,
// here 30 s): a runner still unregistered then is killed, since a peer
// may take its claim over (TestCutOffClaimRunsOnce). With the harness's
// 5 s the outage (two 2 s registration timeouts before Running, then the
// restart) outlasted it on a loaded machine.
func TestFailedRegistrationRetried(t *testing.T) {
	t.Parallel()
	for name, delay := range map[string]time.Duration{"prompt start": 0, "late start": 300 * time.Millisecond} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			failedRegistrationRetried(t, delay)
		})
	}
}

func failedRegistrationRetried(t *testing.T, holdDelay time.Duration) {
	e := newEnv(t)
	outage := &natsOutage{sessionAPI: e.client, stop: e.nats.Shutdown}
	health := runner.HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 300, FirstDelay: 10 * time.Millisecond}
	rp := e.replica(replicaOpts{api: outage, holdDelay: holdDelay, health: health})
	s := e.create("unregistered")
	id := s.GetMetadata().GetId()
	e.handle(rp, added, s) // claims, then reads the session: NATS goes down
	e.waitPhase(id, session.PhaseRunning, 20*time.Second)
	if err := e.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		rec, err := registry.Get(t.Context(), e.runners, id)
		if err != nil {
			return err
		}
		if !rec.Routable() || rec.State != registry.StateRunning || rec.Owner != "rm-0" {
			return fmt.Errorf("record %+v not routable", rec)
		}
		return nil
	})
	if rp.mgr.Count() != 1 {
		t.Fatalf("runners = %d", rp.mgr.Count())
	}
}

// natsOutage is the API, with NATS stopped at the first session read
// (the one after the claim, before the spawn).
type natsOutage struct {
	sessionAPI
	stop func()
	once sync.Once
}

func (o *natsOutage) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	o.once.Do(o.stop)
	return o.sessionAPI.GetSession(ctx, id)
}
