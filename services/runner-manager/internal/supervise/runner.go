package supervise

import (
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// Runner is one local runner and what this replica knows about it. Its
// methods are safe for concurrent use.
type Runner struct {
	id        string
	projectID string
	proc      *runner.Process
	received  time.Time // when the event that started it arrived; zero: not started by an event

	stopCh   chan struct{} // closed by RequestStop and MarkLost
	stopOnce sync.Once

	mu      sync.Mutex
	claim   registry.Record    // guarded by mu; this replica's record as last written
	conds   session.Conditions // guarded by mu; as last reported
	deleted bool               // guarded by mu; the session was deleted: no phase is written
	stopped bool               // guarded by mu; a stop was asked for
	final   bool               // guarded by mu; a terminal phase was written already
	lost    bool               // guarded by mu; another replica took the claim over
	unsent  *status.Update     // guarded by mu; a Creating/Running write that failed, retried by Resend
	// runningSince is the start_time written with Running; zero until the
	// health check passed. Guarded by mu.
	runningSince time.Time
}

func newRunner(id, projectID string, proc *runner.Process, received time.Time, conds session.Conditions, claim registry.Record) *Runner {
	return &Runner{id: id, projectID: projectID, proc: proc, received: received, conds: conds, claim: claim, stopCh: make(chan struct{})}
}

// ID is the session's id.
func (rn *Runner) ID() string { return rn.id }

// RequestStop asks the supervisor to stop the runner (SIGTERM, SIGKILL
// after the grace). With deleted, or for a session whose phase says it is
// over, nothing is written afterwards; otherwise the session ends Stopped.
// Idempotent.
func (rn *Runner) RequestStop(deleted bool) {
	rn.mu.Lock()
	rn.stopped = true
	if deleted {
		rn.deleted = true
	}
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
}

// MarkLost records that the claim belongs to someone else now: the runner
// is killed at once and nothing more is written for it.
func (rn *Runner) MarkLost() {
	rn.mu.Lock()
	rn.lost = true
	rn.final = true
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
}

// StopRequested reports whether a stop was asked for (RequestStop).
func (rn *Runner) StopRequested() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.stopped
}

// Serving returns the start time and conditions the runner was reported
// Running with, and whether it still serves: it passed its health check,
// no stop was asked for, no final phase was written, its claim is still
// this replica's and it has not exited. A runner that does not serve is
// its supervisor's business: it writes what comes next.
func (rn *Runner) Serving() (since time.Time, conds session.Conditions, ok bool) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.stopped || rn.final || rn.lost || rn.runningSince.IsZero() {
		return time.Time{}, nil, false
	}
	select {
	case <-rn.proc.Done():
		return time.Time{}, nil, false // exited: the supervisor reports how
	default:
	}
	return rn.runningSince, rn.conds, true
}

// state is the registry state last written (the runners gauge).
func (rn *Runner) state() string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.claim.State
}

// setCond records c and returns the conditions to report.
func (rn *Runner) setCond(c session.Condition) session.Conditions {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.conds = rn.conds.Set(c, time.Now())
	return rn.conds
}

// setUnsent records (or with nil clears) a status write to retry.
func (rn *Runner) setUnsent(u *status.Update) {
	rn.mu.Lock()
	rn.unsent = u
	rn.mu.Unlock()
}

// done reports whether a stop or a final phase ends what the supervisor
// would write next.
func (rn *Runner) done() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.stopped || rn.final
}
