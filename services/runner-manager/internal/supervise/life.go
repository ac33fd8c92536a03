package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/claim"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// reportTimeout bounds the final report (phase write, claim release) of a
// runner that exited, also during shutdown.
const reportTimeout = 10 * time.Second

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
}

// run is one runner's life after the spawn.
func (s *Supervisor) run(ctx context.Context, rn *Runner) {
	log := s.log.With(slog.String(logkey.SessionID, rn.id), slog.Int(logkey.PID, rn.proc.PID))
	s.onSpawned(ctx, log, rn)
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
	lat, err := rn.proc.WaitHealthy(hctx, s.http, s.cfg.Health)
	hcancel()
	switch {
	case err == nil:
		s.metrics.health(ctx, lat, true)
		s.onHealthy(ctx, log, rn, lat)
	case errors.Is(err, runner.ErrHealthTimeout):
		s.metrics.health(ctx, lat, false)
		s.onHealthTimeout(ctx, log, rn)
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
	if err := s.updateRecord(ctx, rn, func(e *registry.Endpoint) {
		e.ProjectID = rn.projectID
		e.Host, e.Port, e.PID = s.cfg.AdvertiseHost, rn.proc.Port, rn.proc.PID
		e.StartedAt, e.State = rn.proc.StartedAt.UTC(), registry.StateStarting
	}); err != nil {
		log.Warn("register endpoint", slog.String(logkey.Err, err.Error()))
	}
	rn.mu.Lock()
	skip, u := rn.stopped || rn.final, status.Update{Phase: session.PhaseCreating, Conditions: rn.conds}
	rn.mu.Unlock()
	if skip {
		return
	}
	if err := s.status.Write(ctx, rn.id, u); err != nil {
		rn.setUnsent(&u)
		log.Warn("write phase; the sweep retries", slog.String(logkey.Phase, string(session.PhaseCreating)), slog.String(logkey.Err, err.Error()))
	}
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
	if err := s.updateRecord(ctx, rn, func(e *registry.Endpoint) { e.State = registry.StateRunning }); err != nil {
		log.Warn("register endpoint", slog.String(logkey.Err, err.Error()))
	}
	u := status.Update{Phase: session.PhaseRunning, StartTime: now, Conditions: conds}
	if err := s.status.Write(ctx, rn.id, u); err != nil {
		rn.setUnsent(&u)
		log.Warn("write phase; the sweep retries", slog.String(logkey.Phase, string(session.PhaseRunning)), slog.String(logkey.Err, err.Error()))
		return
	}
	rn.setUnsent(nil)
	if !rn.received.IsZero() {
		s.metrics.running(ctx, time.Since(rn.received))
	}
	log.Info("runner running", slog.Duration(logkey.Duration, lat))
}

// onHealthTimeout fails the session and kills the runner.
func (s *Supervisor) onHealthTimeout(ctx context.Context, log *slog.Logger, rn *Runner) {
	unlock := s.Lock(rn.id)
	defer unlock()
	rn.mu.Lock()
	skip := rn.stopped || rn.final
	rn.final = true
	rn.mu.Unlock()
	if skip {
		return
	}
	msg := fmt.Sprintf("%s: no healthy /health answer within %v", status.ReasonHealthCheckTimeout, s.cfg.Health.Deadline())
	rn.setCond(session.Condition{Type: status.CondHealthCheckPassed, Status: session.StatusFalse, Reason: status.ReasonHealthCheckTimeout, Message: msg})
	conds := rn.setCond(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: status.ReasonHealthCheckTimeout, Message: msg})
	if err := rn.proc.Kill(); err != nil {
		log.Warn("kill runner", slog.String(logkey.Err, err.Error()))
	}
	s.status.Fail(ctx, log, rn.id, conds, status.ReasonHealthCheckTimeout)
}

// finish reports how the runner ended, releases the claim and frees the
// slot.
func (s *Supervisor) finish(ctx context.Context, log *slog.Logger, rn *Runner, shutdown bool) {
	unlock := s.Lock(rn.id)
	defer unlock()
	st := rn.proc.Exit()
	rn.mu.Lock()
	final, deleted, stopped, lost := rn.final, rn.deleted, rn.stopped, rn.lost
	rn.final = true
	rn.mu.Unlock()
	log = log.With(slog.Int("exit_code", st.Code), slog.String("signal", st.Signal))
	ended := func(phase session.Phase, reason, msg string) {
		conds := rn.setCond(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: reason, Message: msg})
		u := status.Update{Phase: phase, Conditions: conds}
		if phase.Terminal() {
			u.CompletionTime = time.Now()
		}
		if err := s.status.Write(ctx, rn.id, u); err != nil {
			log.Error("write phase", slog.String(logkey.Phase, string(phase)), slog.String(logkey.Err, err.Error()))
		}
	}
	switch {
	case lost:
		log.Warn("runner killed: claim taken over by another replica")
	case final, deleted:
		log.Info("runner exited")
	case stopped:
		ended(session.PhaseStopped, status.ReasonStopped, "stopped on request")
		log.Info("runner stopped")
	case shutdown && s.cfg.HandBack:
		// Hand the session back: Pending makes whichever replica is alive
		// (this one after a restart) start it again.
		ended(session.PhasePending, status.ReasonShutdown, "runner-manager "+s.claims.Member()+" shut down; the session will be restarted")
		log.Info("runner stopped for shutdown")
	case shutdown:
		conds := rn.setCond(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: status.ReasonRunnerLost,
			Message: status.ReasonRunnerLost + ": runner-manager " + s.claims.Member() + " shut down"})
		s.status.Fail(ctx, log, rn.id, conds, status.ReasonRunnerLost)
	case st.Code == 0:
		ended(session.PhaseCompleted, status.ReasonCompleted, "runner exited with code 0")
		log.Info("runner completed")
	default:
		conds := rn.setCond(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: status.ReasonProcessExited, Message: exitMessage(st)})
		s.status.Fail(ctx, log, rn.id, conds, status.ReasonProcessExited)
	}
	if !lost {
		s.claims.Release(ctx, log, rn.id)
	}
	s.mu.Lock()
	if s.runs[rn.id] == rn {
		delete(s.runs, rn.id)
	}
	s.mu.Unlock()
	if s.cfg.Freed != nil {
		s.cfg.Freed()
	}
}

// updateRecord rewrites this replica's record of rn (claim.Claims.Update).
// A stop request a peer wrote meanwhile is forwarded to the runner; a
// record taken over by another owner marks the runner lost.
func (s *Supervisor) updateRecord(ctx context.Context, rn *Runner, mutate func(*registry.Endpoint)) error {
	rn.mu.Lock()
	held := rn.claim
	rn.mu.Unlock()
	rec, stopRequested, err := s.claims.Update(ctx, held, mutate)
	if err != nil {
		if errors.Is(err, claim.ErrLost) {
			rn.MarkLost()
		}
		return err
	}
	rn.mu.Lock()
	rn.claim = rec
	rn.mu.Unlock()
	if stopRequested {
		rn.RequestStop(false)
	}
	return nil
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
