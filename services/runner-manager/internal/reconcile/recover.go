package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// checkAlive handles Creating/Running events (seen is the phase): the
// session must have a live runner somewhere. The echo of our own writes
// ends at the first check, or, for a Creating echo that arrives after the
// runner became healthy, at healPhase's re-read.
func (r *Reconciler) checkAlive(ctx context.Context, log *slog.Logger, id string, seen session.Phase) error {
	if rn := r.sup.Get(id); rn != nil {
		return r.healPhase(ctx, log, rn, seen)
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
		r.status.Stopped(ctx, log, id)
		r.claims.Release(ctx, log, id)
		return nil
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
