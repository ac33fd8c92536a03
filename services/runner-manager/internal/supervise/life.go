package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// Bounds of the writes of one runner's life. A write that fails is
// retried by the sweep (Resend), so none may hold the session lock long.
const (
	// reportTimeout bounds the final report (phase write, record, claim
	// release) of a runner that exited, also during shutdown.
	reportTimeout = 10 * time.Second
	// finalWriteTimeout bounds one attempt to write a final phase.
	finalWriteTimeout = 2 * time.Second
	// registerTimeout bounds one registration of the endpoint in the
	// record (a NATS outage must not hold the supervisor).
	registerTimeout = 2 * time.Second
	// liveWriteTimeout bounds one Creating/Running write (its read and
	// its tries). Without a deadline each API call waited for the
	// client's default (30 s) and the write made four: an API that
	// accepts and never answers held the session lock for minutes, and
	// the sweep, the resync and the queue waited on it, one runner after
	// another. What fails is kept for Resend. With a deadline the write
	// retries until it instead of four tries (status.Write): about as
	// long as those took against an API that fails fast.
	liveWriteTimeout = 2 * time.Second
)

// supervise starts the goroutine that sees rn through health check, stop
// and exit. Callers hold s.life shared and have checked !closing, so
// Shutdown waits for it (s.wg).
func (s *Supervisor) supervise(ctx context.Context, rn *Runner) {
	// The supervisor outlives the event handler: keep the handler's values
	// (trace) but not its cancellation; shutdownCh ends it instead.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go func() { // owned by the Supervisor (s.wg); ends when the runner has exited and was reported
		defer s.wg.Done()
		defer cancel()
		s.run(sctx, rn)
	}()
	if !rn.registerBy.IsZero() {
		s.wg.Add(1)
		go func() { // owned by the Supervisor (s.wg); ends at rn.registerBy or when the runner exits
			defer s.wg.Done()
			s.giveUpUnregistered(rn)
		}()
	}
}

// registerBy returns when the endpoint of a runner started for held, a
// claim with no runner address (every claim Start gets: written by this
// replica a moment before), must be in the record: the start deadline
// (the health deadline) after the claim's write, its StartedAt on this
// replica's clock. A peer that finds the claim's owner gone takes it over
// once it has seen it unchanged for longer than that
// (claim.WithStartWait): the owner may be starting the runner while cut
// off from NATS, with no address a probe could reach. unaddressed is
// false for a claim with an address.
func (s *Supervisor) registerBy(held registry.Record) (by time.Time, unaddressed bool) {
	if held.Routable() || held.StartedAt.IsZero() {
		return time.Time{}, false
	}
	return held.StartedAt.Add(s.cfg.Health.Deadline()), true
}

// giveUpUnregistered kills rn at rn.registerBy unless its endpoint is in
// its record by then: from then on a peer may take the claim over and
// start the session again, and this replica, cut off from NATS, would not
// hear of it: two runners of one session. The runner is lost: nothing
// more is written for it, and whoever holds the claim next (a peer, or
// this replica's sweep once NATS is back) restarts or fails the session.
// The kill does not wait for the session lock, which a registration stuck
// in the outage may hold.
func (s *Supervisor) giveUpUnregistered(rn *Runner) {
	t := time.NewTimer(time.Until(rn.registerBy))
	defer t.Stop()
	select {
	case <-t.C:
	case <-rn.proc.Done():
		return
	}
	if !rn.giveUp() {
		return
	}
	log := s.log.With(slog.String(logkey.SessionID, rn.id), slog.Int(logkey.PID, rn.proc.PID))
	log.Warn("runner endpoint not registered within the start deadline: runner killed, a peer may take the claim over",
		slog.Duration(logkey.Duration, s.cfg.Health.Deadline()))
	if err := rn.proc.Kill(); err != nil {
		log.Warn("kill runner", slog.String(logkey.Err, err.Error()))
	}
}

// run is one runner's life after the spawn.
func (s *Supervisor) run(ctx context.Context, rn *Runner) {
	log := s.log.With(slog.String(logkey.SessionID, rn.id), slog.Int(logkey.PID, rn.proc.PID))
	// Health: abandoned on a stop request, on exit, or on shutdown.
	hctx, hcancel := context.WithCancel(ctx)
	go func() { // owned by run; ends when hctx ends (hcancel below)
		select {
		case <-rn.stopCh:
		case <-s.shutdownCh:
		case <-hctx.Done():
		}
		hcancel()
	}()
	// The runner starts up while its endpoint is registered and Creating
	// is written (three round trips that queue behind every other start
	// of a burst), so the probes begin at the spawn, not after them: the
	// measured start is the runner's, and Running follows the slower of
	// the two instead of their sum (issue 15).
	type health struct {
		lat time.Duration
		err error
	}
	probed := make(chan health, 1)
	go func() { // owned by run; ends when the probes end (hctx bounds them)
		lat, err := rn.proc.WaitHealthy(hctx, s.http, s.cfg.Health)
		if errors.Is(err, runner.ErrHealthTimeout) {
			s.onHealthTimeout(log, rn) // now, not once onSpawned returned
		}
		probed <- health{lat, err}
	}()
	s.onSpawned(ctx, log, rn)
	h := <-probed
	hcancel()
	lat, err := h.lat, h.err
	switch {
	case err == nil:
		s.metrics.health(ctx, lat, true)
		s.onHealthy(ctx, log, rn, lat)
	case errors.Is(err, runner.ErrHealthTimeout):
		s.metrics.health(ctx, lat, false) // killed already (onHealthTimeout)
	}
	// Wait for the exit, stopping the runner when asked.
	shutdown := false
	select {
	case <-rn.proc.Done():
	case <-rn.stopCh:
		rn.mu.Lock()
		lost := rn.lost
		rn.mu.Unlock()
		grace := s.cfg.StopGrace
		if lost {
			grace = 0 // someone else runs this session now
		}
		if err := rn.proc.Stop(ctx, grace); err != nil {
			log.Warn("stop runner", slog.String(logkey.Err, err.Error()))
		}
		<-rn.proc.Done()
	case <-s.shutdownCh:
		// Shutdown stops every runner (Manager.StopAll); wait for this one.
		shutdown = true
		<-rn.proc.Done()
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer wcancel()
	s.finish(wctx, log, rn, shutdown)
}

// onSpawned registers the endpoint (state starting) and writes Creating.
func (s *Supervisor) onSpawned(ctx context.Context, log *slog.Logger, rn *Runner) {
	unlock := s.Lock(rn.id)
	defer unlock()
	s.register(ctx, log, rn, registry.StateStarting)
	rn.mu.Lock()
	skip, u := rn.stopped || rn.final, status.Update{Phase: session.PhaseCreating, Conditions: rn.conds, RunnerConditions: true}
	rn.mu.Unlock()
	if skip {
		return
	}
	s.writeLive(ctx, log, rn, u)
}

// onHealthy writes Running with the start time and marks the record running.
func (s *Supervisor) onHealthy(ctx context.Context, log *slog.Logger, rn *Runner, lat time.Duration) {
	unlock := s.Lock(rn.id)
	defer unlock()
	if rn.done() {
		return
	}
	now := time.Now()
	rn.setCond(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusTrue, Reason: status.ReasonHealthy, Message: fmt.Sprintf("healthy after %v", lat.Round(time.Millisecond))})
	conds := rn.setCond(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusTrue, Reason: status.ReasonStarted, Message: "runner serving AG-UI"})
	rn.mu.Lock()
	rn.runningSince = now
	rn.mu.Unlock()
	s.register(ctx, log, rn, registry.StateRunning)
	if rn.Lost() {
		return // lost while the registration ran (taken over, or given up)
	}
	if s.writeLive(ctx, log, rn, status.Update{Phase: session.PhaseRunning, StartTime: now, Conditions: conds, RunnerConditions: true}) {
		if !rn.received.IsZero() {
			s.metrics.running(ctx, time.Since(rn.received))
		}
		log.Info("runner running", slog.Duration(logkey.Duration, lat))
	}
}

// onHealthTimeout decides that the session fails and kills the runner;
// finish writes the phase once it exited. It runs at the health deadline
// and does not wait for the session lock, nor for onSpawned: registering
// the endpoint and writing Creating hold the lock up to registerTimeout
// plus liveWriteTimeout (4 s) in an outage, and a sweep's retries hold it
// too. A peer takes over a record in state starting whose owner has no
// heartbeat once its start wait (this deadline plus a margin) is over and
// the runner does not answer: a runner killed only after that, or one
// that came up meanwhile, would run beside the peer's. What it decides is
// rn's alone (rn.mu), as for a runner that exits on its own.
func (s *Supervisor) onHealthTimeout(log *slog.Logger, rn *Runner) {
	msg := fmt.Sprintf("%s: no healthy /health answer within %v", status.ReasonHealthCheckTimeout, s.cfg.Health.Deadline())
	rn.mu.Lock()
	skip := rn.stopped || rn.final
	if !skip {
		rn.ending = &ending{phase: session.PhaseFailed, reason: status.ReasonHealthCheckTimeout, message: msg, fail: status.ReasonHealthCheckTimeout}
	}
	rn.mu.Unlock()
	if skip {
		return
	}
	rn.setCond(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusFalse, Reason: status.ReasonHealthCheckTimeout, Message: msg})
	if err := rn.proc.Kill(); err != nil {
		log.Warn("kill runner", slog.String(logkey.Err, err.Error()))
	}
}

// writeLive writes u (Creating or Running) if the session still wants a
// runner (status.WriteIf) and obeys what it found otherwise: a Stopping
// stops the runner (it ends Stopped), a final phase or a deleted session
// stops it without a write. A failed write is kept for Resend. It reports
// whether u was written. Callers hold the session lock.
func (s *Supervisor) writeLive(ctx context.Context, log *slog.Logger, rn *Runner, u status.Update) bool {
	wrote, err := s.tryWriteLive(ctx, log, rn, u)
	if err != nil {
		log.Warn("write phase; the sweep retries", slog.String(logkey.Phase, string(u.Phase)), slog.String(logkey.Err, err.Error()))
	}
	return wrote
}

// tryWriteLive is writeLive without the warning of a failed write, which
// it returns: the sweep's retries (resend) log their failures once per
// outage instead (package passlog).
func (s *Supervisor) tryWriteLive(ctx context.Context, log *slog.Logger, rn *Runner, u status.Update) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, liveWriteTimeout)
	g, err := s.status.WriteIf(wctx, rn.id, u, session.Phase.WantsRunner)
	cancel()
	if err != nil {
		rn.setUnsent(&u)
		return false, err
	}
	rn.mu.Lock()
	if rn.unsent != nil && (rn.unsent.Phase == u.Phase || u.Phase == session.PhaseRunning) {
		rn.unsent = nil // done, or superseded by Running
	}
	if g.Wrote {
		rn.wrote(g.ReadAt, g.WroteAt)
	}
	rn.mu.Unlock()
	switch {
	case g.Wrote:
		return true, nil
	case g.Deleted:
		log.Info("session deleted before its phase was written: stopping the runner")
		rn.RequestStop(ctx, true)
	case g.Found == session.PhaseStopping:
		log.Info("stop requested before the phase was written: stopping the runner", slog.String(logkey.Phase, string(u.Phase)))
		rn.RequestStop(ctx, false)
	default:
		log.Warn("session is over before its phase was written: stopping the runner", slog.String("current_phase", string(g.Found)))
		rn.RequestStop(ctx, true)
	}
	return false, nil
}

// register writes the runner's endpoint with state want into its record
// (claim.Claims.Update, bounded by registerTimeout). A stop request a peer
// wrote meanwhile is forwarded to the runner; a record taken over by
// another owner marks the runner lost; a failure leaves the runner
// unregistered, and Resend retries.
func (s *Supervisor) register(ctx context.Context, log *slog.Logger, rn *Runner, want string) {
	rn.mu.Lock()
	rn.want = want
	held, unrouted := rn.claim, rn.unrouted
	rn.mu.Unlock()
	if unrouted {
		return // its session moved: the record routes to its successor, or to nothing
	}
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	rec, stopRequested, err := s.claims.Update(rctx, held, func(e *registry.Endpoint) {
		e.ProjectID = rn.projectID
		e.Host, e.Port, e.PID, e.PIDStart = s.cfg.AdvertiseHost, rn.proc.Port, rn.proc.PID, rn.proc.StartTicks
		e.StartedAt, e.State, e.Final = rn.proc.StartedAt.UTC(), want, nil
	})
	if err != nil {
		rn.mu.Lock()
		rn.registered = false
		rn.mu.Unlock()
		if errors.Is(err, claim.ErrLost) {
			rn.MarkLost()
		}
		log.Warn("register endpoint; the sweep retries", slog.String(logkey.Err, err.Error()))
		return
	}
	rn.mu.Lock()
	rn.claim = rec
	rn.registered = rn.want == want
	rn.addressed = true
	rn.mu.Unlock()
	if stopRequested {
		rn.RequestStop(ctx, false)
	}
}

// finish decides how the runner ended and reports it: the final phase is
// written, then the claim released and the slot freed. A final phase that
// cannot be written (an API outage) keeps the claim, with the phase in
// its record, and the runner in the supervisor's list until Resend wrote
// it: releasing the claim of a session still Running in the API would let
// the next resync start the finished task again (issue 14). A runner whose
// record another replica holds when its end would be written (takenOver)
// is lost: its end is not the session's, nothing is written or released.
func (s *Supervisor) finish(ctx context.Context, log *slog.Logger, rn *Runner, shutdown bool) {
	unlock := s.Lock(rn.id)
	defer unlock()
	st := rn.proc.Exit()
	rn.mu.Lock()
	decided, deleted, stopped, lost, end, stopTrace := rn.final, rn.deleted, rn.stopped, rn.lost, rn.ending, rn.stopTrace
	moveTo := rn.moveTo
	rn.final = true
	rn.mu.Unlock()
	replace := false
	log = log.With(slog.Int("exit_code", st.Code), slog.String("signal", st.Signal))
	member := s.claims.Member()
	switch {
	case lost:
		log.Warn("runner killed: claim taken over by another replica, or not registered in time")
	case deleted:
		log.Info("runner exited")
		end = nil
	case end != nil: // decided before the exit (health check timeout)
	case decided:
		log.Info("runner exited")
	case moveTo != nil:
		// Stopped for a move (and not for a stop since): its successor
		// runs the session (replace, below); no phase is written for it.
		log.Info("runner exited for its session's move")
		replace = true
	case stopped:
		end = stoppedOnRequest()
		if stopTrace.IsValid() {
			// Written in the stop request's trace (the Stopping event's
			// handler), where someone following the stop looks for it.
			ctx = trace.ContextWithSpanContext(ctx, stopTrace)
		}
		log.Info("runner stopped")
	case shutdown && s.cfg.HandBack:
		// Hand the session back: Pending makes whichever replica is alive
		// (this one after a restart) start it again.
		end = &ending{phase: session.PhasePending, reason: status.ReasonShutdown, message: "runner-manager " + member + " shut down; the session will be restarted", guarded: true}
		log.Info("runner stopped for shutdown")
	case shutdown:
		end = &ending{phase: session.PhaseFailed, reason: status.ReasonRunnerLost, message: status.ReasonRunnerLost + ": runner-manager " + member + " shut down", fail: status.ReasonRunnerLost, guarded: true}
	case st.Code == 0:
		end = &ending{phase: session.PhaseCompleted, reason: status.ReasonCompleted, message: "runner exited with code 0"}
		log.Info("runner completed")
	default:
		end = &ending{phase: session.PhaseFailed, reason: status.ReasonProcessExited, message: exitMessage(st), fail: status.ReasonProcessExited}
	}
	if s.cfg.Freed != nil {
		defer s.cfg.Freed() // the process slot is free whatever the report does
	}
	if replace {
		// Before Freed runs: the successor takes the slot rn held, not a
		// session waiting for capacity.
		if end = s.replace(ctx, log, rn, moveTo); end == nil {
			s.forget(rn) // the claim is the successor's now, or another replica's
			return
		}
	}
	if end != nil && s.takenOver(ctx, log, rn) {
		// It ended before this replica heard of the takeover (a replica
		// and its runners resumed together after a pause: the runner's
		// exit can come before the record watch's news): the session runs
		// on the new owner, which reports it.
		end, lost = nil, true
	}
	if end != nil && !s.report(ctx, log, rn, end) {
		if !rn.Pending() { // taken over meanwhile: the claim is not ours
			s.forget(rn)
		}
		return
	}
	if !lost {
		s.claims.Release(ctx, log, rn.id)
	}
	s.forget(rn)
}

// report writes end as the session's final phase. A write that fails is
// kept (rn.pending) and recorded in the claim; report then returns false
// and Resend retries.
func (s *Supervisor) report(ctx context.Context, log *slog.Logger, rn *Runner, end *ending) bool {
	u := rn.finalUpdate(end)
	if end.fail != "" {
		log.Info("session failed", slog.String(logkey.Reason, end.fail))
	}
	wctx, cancel := context.WithTimeout(ctx, finalWriteTimeout)
	var err error
	if end.guarded {
		u, err = s.writeGuarded(wctx, log, rn, u, end)
	} else {
		err = s.status.WriteFinal(wctx, rn.id, u, end.fail, s.ownedCheck(log, rn))
	}
	cancel()
	if err == nil {
		return true
	}
	if errors.Is(err, errTakenOver) {
		return false // lost (MarkLost): nothing pending, nothing to record
	}
	log.Warn("write final phase; the claim stays until it is written", slog.String(logkey.Phase, string(end.phase)), slog.String(logkey.Err, err.Error()))
	rn.mu.Lock()
	rn.pending = &pendingFinal{update: u}
	rn.mu.Unlock()
	s.recordFinal(ctx, log, rn)
	return false
}

// writeGuarded writes u, the ending of a runner stopped by the service's
// shutdown, only over a phase that still wants a runner. The shutdown
// stopped taking events (and watching records), so a stop asked for
// meanwhile never reached the runner: written blindly, the hand-back's
// Pending would replace the user's Stopping and the session would start
// again elsewhere. A Stopping found there ends Stopped instead (the
// runner is stopped); a session over or deleted meanwhile gets nothing.
// It returns the update it wrote or tried to write (the one to retry).
func (s *Supervisor) writeGuarded(ctx context.Context, log *slog.Logger, rn *Runner, u status.Update, end *ending) (status.Update, error) {
	check := s.ownedCheck(log, rn)
	g, err := s.status.WriteFinalIf(ctx, rn.id, u, end.fail, session.Phase.WantsRunner, check)
	switch {
	case err != nil:
		return u, err
	case g.Wrote, g.Deleted:
		return u, nil
	case g.Found != session.PhaseStopping:
		log.Info("session over before the shutdown's phase was written: nothing written", slog.String("current_phase", string(g.Found)))
		return u, nil
	}
	log.Info("stop requested during the shutdown: the runner ends stopped")
	stopped := rn.finalUpdate(stoppedOnRequest())
	return stopped, s.status.WriteChecked(ctx, rn.id, stopped, check)
}

// errTakenOver ends a final-phase write whose record another replica took
// over between its retries (ownedCheck).
var errTakenOver = errors.New("claim taken over by another replica")

// ownedCheck is the status.Check of rn's final-phase writes: before each
// retry the record is read again (takenOver), and one another replica
// owns now ends the write with errTakenOver, rn lost. Its owner was read
// before the first try, but the retries last up to a few seconds: a peer
// that took the session over meanwhile may already have written the new
// run's Running, which the old end (Failed) would overwrite. What is left
// is one API round trip after each read, instead of the whole retry.
func (s *Supervisor) ownedCheck(log *slog.Logger, rn *Runner) status.Check {
	return func(ctx context.Context) error {
		if s.takenOver(ctx, log, rn) {
			return errTakenOver
		}
		return nil
	}
}

// recordFinal writes rn's pending final phase into its record (state
// exited, no endpoint), so that if this replica dies before the phase is
// written, the taker writes it instead of starting the session again.
func (s *Supervisor) recordFinal(ctx context.Context, log *slog.Logger, rn *Runner) {
	rn.mu.Lock()
	p, held := rn.pending, rn.claim
	rn.mu.Unlock()
	if p == nil || p.recorded {
		return
	}
	u := p.update
	final := registry.Final{Phase: string(u.Phase), At: u.CompletionTime}
	if final.At.IsZero() {
		final.At = time.Now()
	}
	if c, ok := u.Conditions.Get(status.CondRunnerStarted); ok {
		final.Reason, final.Message = c.Reason, c.Message
	}
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	rec, _, err := s.claims.Update(rctx, held, func(e *registry.Endpoint) {
		e.Host, e.Port, e.PID, e.PIDStart, e.State, e.Final = "", 0, 0, 0, registry.StateExited, &final
	})
	switch {
	case errors.Is(err, claim.ErrLost):
		// Another replica holds the session now and decides its phase.
		log.Warn("final phase not written and the claim was taken over", slog.String(logkey.Err, err.Error()))
		rn.MarkLost()
	case err != nil:
		log.Warn("record final phase; the sweep retries", slog.String(logkey.Err, err.Error()))
	default:
		rn.mu.Lock()
		rn.claim = rec
		if rn.pending == p {
			p.recorded = true
		}
		rn.mu.Unlock()
		// The record holds no endpoint now: nothing routes to the port.
		rn.proc.ReleasePort()
	}
}

// Pending reports whether the runner exited and its final phase waits to
// be written.
func (rn *Runner) Pending() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.pending != nil
}

// forget drops rn, whose runner has exited, from the runners of this
// replica and gives its port back to the pool. Every caller has released
// the record (or found it another owner's, or deleted): the port was held
// until then, since a record naming it still routes the session's clients
// to it. A release that failed leaves the record naming the port; the
// pool skips the ports that records name (Pool.SkipNamed) until the
// sweep takes it over.
func (s *Supervisor) forget(rn *Runner) {
	s.mu.Lock()
	if s.runs[rn.id] == rn {
		delete(s.runs, rn.id)
	}
	s.mu.Unlock()
	rn.proc.ReleasePort()
}

// exitMessage is "ProcessExited: exit code N" (or the signal) plus the
// stderr tail.
func exitMessage(st runner.ExitStatus) string {
	var b strings.Builder
	b.WriteString(status.ReasonProcessExited)
	if st.Signal != "" {
		b.WriteString(": killed by signal " + st.Signal)
	} else {
		fmt.Fprintf(&b, ": exit code %d", st.Code)
	}
	if len(st.StderrTail) > 0 {
		b.WriteString("\nstderr (last lines):\n")
		b.WriteString(strings.Join(st.StderrTail, "\n"))
	}
	return b.String()
}
