package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// checkAlive handles Creating/Running events (seen is the phase, seenAt
// its updated_at): the session must have a live runner somewhere. The
// echo of our own writes ends at the first check, or, for a Creating echo
// that arrives after the runner became healthy, in healPhase.
func (r *Reconciler) checkAlive(ctx context.Context, log *slog.Logger, id string, seen session.Phase, seenAt time.Time) error {
	if rn := r.sup.Get(id); rn != nil {
		return r.healPhase(ctx, log, rn, seen, seenAt)
	}
	rec, err := r.claims.Get(ctx, id)
	invalid := errors.Is(err, registry.ErrInvalid)
	switch {
	case err == nil:
		return r.takeOverIfGone(ctx, log, rec, time.Time{})
	case !errors.Is(err, registry.ErrNotFound) && !invalid:
		return wrapRetry("read claim of", id, err)
	}
	// No claim at all. Re-read: a runner that just ended wrote its final
	// phase before it released the claim.
	fresh, err := r.api.GetSession(ctx, id)
	if grpcstatus.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		return wrapRetry("read session", id, err)
	}
	if p := session.PhaseOf(fresh); p != session.PhaseCreating && p != session.PhaseRunning {
		return nil
	}
	if invalid {
		r.claims.Release(ctx, log, id) // purges the undecodable record
	}
	held, err := r.claims.Claim(ctx, id, fresh.GetProjectId())
	if err != nil {
		if errors.Is(err, registry.ErrClaimed) {
			return nil
		}
		return wrapRetry("claim", id, err)
	}
	// The runner is lost, and no owner was ever recorded for it.
	return r.recoverClaimed(ctx, log, fresh, supervise.Start{Claim: held, Restart: &supervise.Restart{}})
}

// takeOverIfGone leaves a claim of a live owner alone and takes over one
// whose owner is gone (claim.OwnerGone), so that exactly one replica wins;
// then it decides the session's fate (recoverClaimed). received is when
// the event arrived (zero when no event asked).
func (r *Reconciler) takeOverIfGone(ctx context.Context, log *slog.Logger, rec registry.Record, received time.Time) error {
	gone, err := r.claims.OwnerGone(ctx, rec, r.sup.Get(rec.SessionID) != nil)
	if err != nil {
		return err
	}
	if !gone {
		return nil
	}
	if rec.Final != nil {
		// The runner ended and its final phase waits to be written: write
		// it, never start the finished session again.
		return r.adoptFinal(ctx, log, rec)
	}
	held, err := r.claims.TakeOver(ctx, rec)
	if err != nil {
		if errors.Is(err, registry.ErrConflict) {
			r.metrics.takeover(ctx, "lost_race")
			return nil // another replica took it, or the owner moved on
		}
		return wrapRetry("take over claim of", rec.SessionID, err)
	}
	log = log.With(slog.String("previous_owner", rec.Owner))
	log.Info("claim taken over")
	if rec.Owner == r.cfg.Member {
		r.endLostGroup(ctx, log, rec)
	}
	fresh, err := r.api.GetSession(ctx, rec.SessionID)
	if err != nil {
		r.claims.Release(ctx, log, rec.SessionID)
		if grpcstatus.Code(err) == codes.NotFound {
			r.metrics.takeover(ctx, "deleted")
			return nil
		}
		return wrapRetry("read session", rec.SessionID, err)
	}
	return r.recoverClaimed(ctx, log, fresh, supervise.Start{Claim: held, Received: received, Restart: &supervise.Restart{Owner: rec.Owner}})
}

// endLostGroup ends what is left of the process group of rec's runner, a
// runner this replica's previous incarnation started (same member id, so
// the same host): Pdeathsig killed its leader with that incarnation, not
// the leader's children. Done before the session is restarted or failed,
// so that no second runner of the session runs beside them. The grace is
// a stop's, whatever is left of ctx (a sweep's deadline is shorter): a
// lost group still running when ctx ends would otherwise never be ended.
// Failures are logged; the session's recovery goes on.
func (r *Reconciler) endLostGroup(ctx context.Context, log *slog.Logger, rec registry.Record) {
	if rec.PID == 0 {
		return // never spawned, or its exit was recorded
	}
	g := runner.LostGroup{PGID: rec.PID, StartTicks: rec.PIDStart, SessionID: rec.SessionID}
	if err := runner.EndLostGroup(context.WithoutCancel(ctx), log, g, r.cfg.StopGrace); err != nil {
		log.Warn("end the process group of a lost runner", slog.String(logkey.Err, err.Error()))
	}
}

// recoverClaimed decides the fate of a session this replica just claimed
// whose runner is gone (o.Restart names the lost owner).
func (r *Reconciler) recoverClaimed(ctx context.Context, log *slog.Logger, s *ambientv1.Session, o supervise.Start) error {
	id := s.GetMetadata().GetId()
	switch p := session.PhaseOf(s); {
	case !r.cfg.Selector.Selects(s):
		r.metrics.takeover(ctx, "not_selected")
		r.claims.Release(ctx, log, id)
		return nil
	case p == session.PhaseStopping:
		r.metrics.takeover(ctx, "stopped")
		err := r.status.Stopped(ctx, log, id)
		r.claims.Release(ctx, log, id) // a failed write is the resync's to redo
		return err
	case p == session.PhaseNone || p == session.PhasePending:
		r.metrics.takeover(ctx, "started")
		o.Restart = nil // it never ran: a plain start
		return r.start(ctx, log, s, o)
	case p == session.PhaseCreating || p == session.PhaseRunning:
		if r.cfg.LostPolicy == LostRestart {
			r.metrics.takeover(ctx, "restarted")
			return r.start(ctx, log, s, o)
		}
		r.metrics.takeover(ctx, "failed")
		msg := status.ReasonRunnerLost + ": the runner's owner " + o.Restart.String() + " is gone"
		conds := status.Conditions(s).Set(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: status.ReasonRunnerLost, Message: msg}, time.Now())
		r.status.Fail(ctx, log, id, conds, status.ReasonRunnerLost)
		r.claims.Release(ctx, log, id)
		return nil
	default: // terminal: nothing runs, nothing to report
		r.metrics.takeover(ctx, "terminal")
		r.claims.Release(ctx, log, id)
		return nil
	}
}

// adoptFinal finishes a record whose runner exited before its final phase
// could be written (registry.StateExited; its owner is this replica
// without the runner here, or gone): it takes the record over when it is
// a peer's (keeping the phase), writes the phase and releases the claim.
func (r *Reconciler) adoptFinal(ctx context.Context, log *slog.Logger, rec registry.Record) error {
	id := rec.SessionID
	if rec.Owner != r.cfg.Member {
		held, err := r.claims.TakeOver(ctx, rec)
		if errors.Is(err, registry.ErrConflict) {
			r.metrics.takeover(ctx, "lost_race")
			return nil
		}
		if err != nil {
			return wrapRetry("take over claim of", id, err)
		}
		rec = held
	}
	f := rec.Final
	fresh, err := r.api.GetSession(ctx, id)
	switch {
	case grpcstatus.Code(err) == codes.NotFound:
		r.claims.Release(ctx, log, id)
		return nil
	case err != nil:
		return wrapRetry("read session", id, err)
	}
	if session.PhaseOf(fresh).Terminal() {
		r.claims.Release(ctx, log, id) // someone wrote it already
		return nil
	}
	phase := session.Phase(f.Phase)
	conds := status.Conditions(fresh).Set(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: f.Reason, Message: f.Message}, f.At)
	u := status.Update{Phase: phase, Conditions: conds}
	if phase.Terminal() {
		u.CompletionTime = f.At
	}
	if err := r.status.Write(ctx, id, u); err != nil {
		return wrapRetry("write final phase of", id, err)
	}
	r.metrics.takeover(ctx, "finished")
	log.Info("final phase of an exited runner written", slog.String(logkey.Phase, f.Phase), slog.String("previous_owner", rec.Owner))
	r.claims.Release(ctx, log, id)
	return nil
}
