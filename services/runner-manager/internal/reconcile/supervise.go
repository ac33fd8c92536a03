package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// supervise starts the goroutine that sees rn through health check, stop
// and exit. Callers hold r.life shared and have checked !closing, so Run's
// shutdown waits for it (r.wg).
func (r *Reconciler) supervise(ctx context.Context, rn *run) {
	// The supervisor outlives the event handler: keep the handler's values
	// (trace) but not its cancellation; shutdownCh ends it instead.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.wg.Add(1)
	go func() { // owned by Run (r.wg); ends when the runner has exited and was reported
		defer r.wg.Done()
		defer cancel()
		r.superviseRun(sctx, rn)
	}()
}

func (r *Reconciler) superviseRun(ctx context.Context, rn *run) {
	log := r.log.With(slog.String(logkey.SessionID, rn.id), slog.Int(logkey.PID, rn.proc.PID))
	shutdown := false
	r.onSpawned(ctx, log, rn)
	// Health: abandoned on a stop request, on exit, or on shutdown.
	hctx, hcancel := context.WithCancel(ctx)
	go func() { // owned by superviseRun; ends when hctx ends (hcancel below)
		select {
		case <-rn.stopCh:
		case <-r.shutdownCh:
		case <-hctx.Done():
		}
		hcancel()
	}()
	lat, err := rn.proc.WaitHealthy(hctx, r.http, r.cfg.Health)
	hcancel()
	switch {
	case err == nil:
		r.metrics.health(ctx, lat, true)
		r.onHealthy(ctx, log, rn, lat)
	case errors.Is(err, runner.ErrHealthTimeout):
		r.metrics.health(ctx, lat, false)
		r.onHealthTimeout(ctx, log, rn)
	}
	// Wait for the exit, stopping the runner when asked.
	for done := false; !done; {
		select {
		case <-rn.proc.Done():
			done = true
		case <-rn.stopCh:
			rn.mu.Lock()
			lost := rn.lost
			rn.mu.Unlock()
			grace := r.cfg.StopGrace
			if lost {
				grace = 0 // someone else runs this session now
			}
			if err := rn.proc.Stop(ctx, grace); err != nil {
				log.Warn("stop runner", slog.String(logkey.Err, err.Error()))
			}
			<-rn.proc.Done()
			done = true
		case <-r.shutdownCh:
			// Run stops every runner (Manager.StopAll); wait for this one.
			shutdown = true
			<-rn.proc.Done()
			done = true
		}
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	r.finish(wctx, log, rn, shutdown)
}

// onHealthy writes Running with the start time and marks the record running.
func (r *Reconciler) onHealthy(ctx context.Context, log *slog.Logger, rn *run, lat time.Duration) {
	unlock := r.locks.lock(rn.id)
	defer unlock()
	rn.mu.Lock()
	skip := rn.stopped || rn.final
	rn.mu.Unlock()
	if skip {
		return
	}
	now := time.Now()
	rn.setCond(Condition{Type: CondHealthCheckPassed, Status: StatusTrue, Reason: ReasonHealthy, Message: fmt.Sprintf("healthy after %v", lat.Round(time.Millisecond))})
	conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusTrue, Reason: ReasonStarted, Message: "runner serving AG-UI"})
	rn.mu.Lock()
	rn.runningSince = now
	rn.mu.Unlock()
	if err := r.updateRecord(ctx, rn, func(e *registry.Endpoint) { e.State = registry.StateRunning }); err != nil {
		log.Warn("register endpoint", slog.String(logkey.Err, err.Error()))
	}
	u := statusUpdate{Phase: PhaseRunning, StartTime: now, Conditions: conds}
	if err := r.writeStatus(ctx, rn.id, u); err != nil {
		rn.setUnsent(&u)
		log.Warn("write phase; the sweep retries", slog.String(logkey.Phase, PhaseRunning), slog.String(logkey.Err, err.Error()))
		return
	}
	rn.setUnsent(nil)
	if !rn.received.IsZero() {
		r.metrics.running(ctx, time.Since(rn.received))
	}
	log.Info("runner running", slog.Duration(logkey.Duration, lat))
}

// onHealthTimeout fails the session and kills the runner.
func (r *Reconciler) onHealthTimeout(ctx context.Context, log *slog.Logger, rn *run) {
	unlock := r.locks.lock(rn.id)
	defer unlock()
	rn.mu.Lock()
	skip := rn.stopped || rn.final
	rn.final = true
	rn.mu.Unlock()
	if skip {
		return
	}
	msg := fmt.Sprintf("%s: no healthy /health answer within %v", ReasonHealthCheckTimeout, r.cfg.Health.Deadline())
	rn.setCond(Condition{Type: CondHealthCheckPassed, Status: StatusFalse, Reason: ReasonHealthCheckTimeout, Message: msg})
	conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonHealthCheckTimeout, Message: msg})
	if err := rn.proc.Kill(); err != nil {
		log.Warn("kill runner", slog.String(logkey.Err, err.Error()))
	}
	r.fail(ctx, log, rn.id, conds, ReasonHealthCheckTimeout)
}

// finish reports how the runner ended, releases the claim and frees the slot.
func (r *Reconciler) finish(ctx context.Context, log *slog.Logger, rn *run, shutdown bool) {
	unlock := r.locks.lock(rn.id)
	defer unlock()
	st := rn.proc.Exit()
	rn.mu.Lock()
	final, deleted, stopped, lost := rn.final, rn.deleted, rn.stopped, rn.lost
	rn.final = true
	rn.mu.Unlock()
	now := time.Now()
	log = log.With(slog.Int("exit_code", st.Code), slog.String("signal", st.Signal))
	switch {
	case lost:
		log.Warn("runner killed: claim taken over by another replica")
	case final, deleted:
		log.Info("runner exited")
	case stopped:
		conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonStopped, Message: "stopped on request"})
		if err := r.writeStatus(ctx, rn.id, statusUpdate{Phase: PhaseStopped, CompletionTime: now, Conditions: conds}); err != nil {
			log.Error("write phase", slog.String(logkey.Phase, PhaseStopped), slog.String(logkey.Err, err.Error()))
		}
		log.Info("runner stopped")
	case shutdown && r.cfg.LostPolicy == LostRestart:
		// Hand the session back: Pending makes whichever replica is alive
		// (this one after a restart) start it again.
		conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonShutdown,
			Message: "runner-manager " + r.cfg.Member + " shut down; the session will be restarted"})
		if err := r.writeStatus(ctx, rn.id, statusUpdate{Phase: PhasePending, Conditions: conds}); err != nil {
			log.Error("write phase", slog.String(logkey.Phase, PhasePending), slog.String(logkey.Err, err.Error()))
		}
		log.Info("runner stopped for shutdown")
	case shutdown:
		conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonRunnerLost,
			Message: ReasonRunnerLost + ": runner-manager " + r.cfg.Member + " shut down"})
		r.fail(ctx, log, rn.id, conds, ReasonRunnerLost)
	case st.Code == 0:
		conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonCompleted, Message: "runner exited with code 0"})
		if err := r.writeStatus(ctx, rn.id, statusUpdate{Phase: PhaseCompleted, CompletionTime: now, Conditions: conds}); err != nil {
			log.Error("write phase", slog.String(logkey.Phase, PhaseCompleted), slog.String(logkey.Err, err.Error()))
		}
		log.Info("runner completed")
	default:
		msg := exitMessage(st)
		conds := rn.setCond(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonProcessExited, Message: msg})
		r.fail(ctx, log, rn.id, conds, ReasonProcessExited)
	}
	if !lost {
		r.release(ctx, log, rn.id)
	}
	r.mu.Lock()
	if r.runs[rn.id] == rn {
		delete(r.runs, rn.id)
	}
	r.mu.Unlock()
	r.signalKick()
}

// exitMessage is "ProcessExited: exit code N" (or the signal) plus the
// stderr tail.
func exitMessage(st runner.ExitStatus) string {
	var b strings.Builder
	b.WriteString(ReasonProcessExited)
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
