package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
)

// stopSession handles Stopping (deleted=false) and DELETED (deleted=true).
// A runner here is stopped by its supervisor (SIGTERM, SIGKILL after the
// grace, then Stopped); a runner on a live peer gets a stop request through
// its registry record; no runner at all means Stopped at once.
func (r *Reconciler) stopSession(ctx context.Context, log *slog.Logger, id string, deleted bool) error {
	if !deleted {
		// Level check: a replayed Stopping event must not stop a session
		// that has been restarted since.
		fresh, err := r.api.GetSession(ctx, id)
		switch {
		case status.Code(err) == codes.NotFound:
			deleted = true
		case err != nil:
			return wrapRetry("read session", id, err)
		case fresh.GetPhase() != PhaseStopping:
			log.Debug("stale stopping event", slog.String("current_phase", fresh.GetPhase()))
			return nil
		}
	}
	r.clearWaiting(id)
	if rn := r.localRun(id); rn != nil {
		log.Info("stopping runner", slog.Bool("deleted", deleted))
		rn.requestStop(deleted)
		return nil
	}
	rec, err := registry.Get(ctx, r.kv, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		r.markStopped(ctx, log, id, deleted)
		return nil
	case errors.Is(err, registry.ErrInvalid):
		r.release(ctx, log, id)
		r.markStopped(ctx, log, id, deleted)
		return nil
	case err != nil:
		return wrapRetry("read claim of", id, err)
	}
	alive := false // a claim of ours without a runner here was left by a previous incarnation
	if rec.Owner != r.cfg.Member {
		if alive, err = r.members.Alive(ctx, rec.Owner); err != nil {
			return wrapRetry("check owner of", id, err)
		}
	}
	if alive {
		if rec.State == registry.StateStopping {
			return nil
		}
		ep := rec.Endpoint
		ep.State = registry.StateStopping
		if _, err := registry.Register(ctx, r.kv, ep, rec.Revision); err != nil {
			return wrapRetry("request stop of", id, err) // changed meanwhile: retry
		}
		log.Info("stop requested from owner", slog.String(logkey.Member, rec.Owner))
		return nil
	}
	// Dead owner: take the record over so nobody restarts it, then finish.
	if _, err := registry.Register(ctx, r.kv, r.claimRecord(id, rec.ProjectID), rec.Revision); err != nil {
		return wrapRetry("take over claim of", id, err)
	}
	r.metrics.takeover(ctx, "stopped")
	r.markStopped(ctx, log, id, deleted)
	r.release(ctx, log, id)
	return nil
}

// markStopped writes Stopped with a completion time for a session without a
// runner (nothing to write for a deleted one).
func (r *Reconciler) markStopped(ctx context.Context, log *slog.Logger, id string, deleted bool) {
	if deleted {
		return
	}
	conds := conditions(nil).set(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonStopped, Message: "stopped; no runner was running"}, time.Now())
	if fresh, err := r.api.GetSession(ctx, id); err == nil {
		conds = parseConditions(fresh.Conditions).set(conds[0], time.Now())
	}
	if err := r.writeStatus(ctx, id, statusUpdate{Phase: PhaseStopped, CompletionTime: time.Now(), Conditions: conds}); err != nil {
		log.Error("write phase", slog.String(logkey.Phase, PhaseStopped), slog.String(logkey.Err, err.Error()))
		return
	}
	log.Info("session stopped without a runner")
}
