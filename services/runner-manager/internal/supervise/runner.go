package supervise

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
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
	// stopTrace is the span of the last stop request that had one (the
	// handler of the Stopping event): the Stopped write joins that trace,
	// not the start event's, so a stop can be followed to its end.
	// Guarded by mu.
	stopTrace trace.SpanContext
	final     bool           // guarded by mu; the supervisor decided the final phase (or that there is none)
	lost      bool           // guarded by mu; another replica took the claim over
	unsent    *status.Update // guarded by mu; a Creating/Running write that failed, retried by Resend
	// ending is the final phase decided before the exit (a failed health
	// check); finish reports it. Guarded by mu.
	ending *ending
	// want is the registry state the record should say (starting,
	// running); registered is whether it says so with this runner's
	// endpoint: a registration that failed is retried by Resend, or the
	// runner would stay unroutable for its whole life. Guarded by mu.
	want       string
	registered bool
	// addressed is set once a registration wrote the runner's endpoint
	// into its record: from then on a peer probes the runner before it
	// takes the claim over. Guarded by mu.
	addressed bool
	// registerBy is when a runner not yet addressed is killed
	// (Supervisor.giveUpUnregistered); zero: nothing to wait for. Set
	// before its supervisor starts, read-only after.
	registerBy time.Time
	// pending is the final phase of a runner that exited, kept while the
	// write fails (an API outage): the claim stays, with the phase in its
	// record, so that nobody starts the finished session again; Resend
	// retries. Guarded by mu.
	pending *pendingFinal
	// writes bracket each Creating/Running write of this runner (the
	// session's updated_at before and after it): a change stamped inside
	// one was overwritten by it (status.WriteIf). Every write's, not only
	// the last one's: a Stopping overwritten by the Creating write may be
	// handled after the Running write. Guarded by mu.
	writes []window
	// runningSince is the start_time written with Running; zero until the
	// health check passed. Guarded by mu.
	runningSince time.Time
	// moveTo is the session, under its new project, that replaces this
	// runner once it exited (Supervisor.Move); nil unless a move was
	// asked for and no stop or deletion since. Guarded by mu.
	moveTo *ambientv1.Session
	// unrouted is set once Move took the endpoint out of the record:
	// no registration writes it back, or agui-proxy would route the
	// session's clients to this runner again, under its old project.
	// Guarded by mu.
	unrouted bool
	// startRepos are the repos its REPOS_JSON named when it was spawned
	// (runner.StartRepos): what it has before anyone adds or removes one
	// (package reconcile, repos.go). Set before its supervisor starts,
	// read-only after.
	startRepos []runner.Repo
}

// ending is how a runner's session ends: the phase and the RunnerStarted
// condition written for it.
type ending struct {
	phase   session.Phase
	reason  string
	message string
	// fail, when set, is the reason counted as a failure.
	fail string
	// guarded, when set, writes the phase only over one that still wants
	// a runner: the ending of a runner stopped by the service's shutdown,
	// which no longer hears of a stop, end or deletion of its session.
	guarded bool
}

// stoppedOnRequest is the ending of a runner stopped because its session
// asked to stop.
func stoppedOnRequest() *ending {
	return &ending{phase: session.PhaseStopped, reason: status.ReasonStopped, message: "stopped on request"}
}

// window is one Creating/Running write: a change of the session stamped
// in (readAt, wroteAt] was overwritten by it.
type window struct{ readAt, wroteAt time.Time }

// maxWindows bounds the write windows a runner keeps: its Creating and
// Running writes, and a few rewrites of Running that healed phase drift.
const maxWindows = 8

// pendingFinal is a final phase not yet written.
type pendingFinal struct {
	update   status.Update
	recorded bool // the record holds it (registry.StateExited)
}

func newRunner(id, projectID string, proc *runner.Process, received time.Time, conds session.Conditions, claim registry.Record) *Runner {
	return &Runner{id: id, projectID: projectID, proc: proc, received: received, conds: conds, claim: claim, want: registry.StateStarting, stopCh: make(chan struct{})}
}

// ID is the session's id.
func (rn *Runner) ID() string { return rn.id }

// Port is the runner's port (on the health check's host).
func (rn *Runner) Port() int { return rn.proc.Port }

// StartRepos returns the repos its REPOS_JSON named when it was spawned.
// Read-only: callers clone it before they change it.
func (rn *Runner) StartRepos() []runner.Repo { return rn.startRepos }

// RequestStop asks the supervisor to stop the runner (SIGTERM, SIGKILL
// after the grace). With deleted, or for a session whose phase says it is
// over, nothing is written afterwards; otherwise the session ends Stopped.
// Idempotent. The Stopped write joins the trace of ctx's span, if any.
func (rn *Runner) RequestStop(ctx context.Context, deleted bool) {
	rn.mu.Lock()
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		rn.stopTrace = sc
	}
	rn.stopped = true
	rn.moveTo = nil // a stop or deletion asked for after a move wins
	if deleted {
		rn.deleted = true
	}
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
}

// Project is the project rn serves or, once a move was asked for
// (Supervisor.Move), the one its successor starts under.
func (rn *Runner) Project() string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.moveTo != nil {
		return rn.moveTo.GetProjectId()
	}
	return rn.projectID
}

// Movable reports whether a move may still replace rn (Supervisor.Move):
// it has not exited, and no stop, deletion, takeover or failed health
// check decided how it ends.
func (rn *Runner) Movable() bool {
	rn.mu.Lock()
	decided := rn.final || rn.lost || rn.ending != nil || rn.stopped && rn.moveTo == nil
	rn.mu.Unlock()
	return !decided && !rn.Exited()
}

// MarkLost records that the claim belongs to someone else now: the runner
// is killed at once and nothing more is written for it.
func (rn *Runner) MarkLost() {
	rn.mu.Lock()
	rn.lost = true
	rn.final = true
	rn.pending = nil
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
}

// giveUp marks rn lost (as MarkLost), and reports true, unless its
// endpoint was registered or it is lost already.
func (rn *Runner) giveUp() bool {
	rn.mu.Lock()
	if rn.addressed || rn.lost {
		rn.mu.Unlock()
		return false
	}
	rn.lost, rn.final, rn.pending = true, true, nil
	rn.mu.Unlock()
	rn.stopOnce.Do(func() { close(rn.stopCh) })
	return true
}

// Lost reports whether another replica took the claim over (MarkLost).
func (rn *Runner) Lost() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.lost
}

// StopRequested reports whether a stop was asked for (RequestStop).
func (rn *Runner) StopRequested() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.stopped
}

// Overwrote reports whether a change of the session stamped at (its
// updated_at) landed between the read and the write of one of this
// runner's Creating/Running writes, so that write replaced it (see
// status.WriteIf).
func (rn *Runner) Overwrote(at time.Time) bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	for _, w := range rn.writes {
		if at.After(w.readAt) && !at.After(w.wroteAt) {
			return true
		}
	}
	return false
}

// wrote records the window of a Creating/Running write. Callers hold mu.
func (rn *Runner) wrote(readAt, wroteAt time.Time) {
	if len(rn.writes) == maxWindows {
		// Only phase drift heals write this often: drop the oldest window
		// after the first two (normally Creating and Running, the writes a
		// user's stop races with).
		rn.writes = slices.Delete(rn.writes, 2, 3)
	}
	rn.writes = append(rn.writes, window{readAt: readAt, wroteAt: wroteAt})
}

// Record is this replica's record of the runner as last written.
func (rn *Runner) Record() registry.Record {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.claim
}

// Exited reports whether the runner's process has exited (its supervisor
// may still be writing its final phase).
func (rn *Runner) Exited() bool {
	select {
	case <-rn.proc.Done():
		return true
	default:
		return false
	}
}

// Serving returns the start time and conditions the runner was reported
// Running with, and whether it still serves: it passed its health check,
// no stop was asked for, no final phase was decided, its claim is still
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

// finalUpdate is the status update that reports end: RunnerStarted False
// with its reason and message (a health check still polling settled too),
// and the completion time of a terminal phase.
func (rn *Runner) finalUpdate(end *ending) status.Update {
	rn.endHealthCheck(end.reason)
	conds := rn.setCond(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: end.reason, Message: end.message})
	// RunnerConditions: the session's other conditions (a Reconciled
	// written while the runner ran) are kept, not replaced by the copy
	// taken at the start.
	u := status.Update{Phase: end.phase, Conditions: conds, RunnerConditions: true}
	if end.phase.Terminal() {
		u.CompletionTime = time.Now()
	}
	return u
}

// endHealthCheck settles a HealthCheckPassed still Unknown (polling)
// as False with reason: the runner ended (exited, stopped, shut down)
// before its health check passed, and the final conditions must not say
// it is still being polled.
func (rn *Runner) endHealthCheck(reason string) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if c, ok := rn.conds.Get(status.CondHealthCheckPassed); ok && c.Status == session.StatusUnknown {
		rn.conds = rn.conds.Set(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusFalse, Reason: reason,
			Message: "the runner ended before its health check passed"}, time.Now())
	}
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

// LastWrite is the session's updated_at as this replica last wrote its
// phase (Creating or Running; zero before): a change stamped no later is
// older than what the API holds.
func (rn *Runner) LastWrite() time.Time {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if len(rn.writes) == 0 {
		return time.Time{}
	}
	return rn.writes[len(rn.writes)-1].wroteAt
}
