package reconcile

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
)

// stopSession handles Stopping (deleted=false) and DELETED (deleted=true).
// A runner here is stopped by its supervisor (SIGTERM, SIGKILL after the
// grace, then Stopped); a runner on a live peer gets a stop request through
// its registry record; no runner at all means Stopped at once (nothing is
// written for a deleted session).
func (r *Reconciler) stopSession(ctx context.Context, log *slog.Logger, id string, deleted bool) error {
	if !deleted {
		// Level check: a replayed Stopping event must not stop a session
		// that has been restarted since.
		fresh, err := r.api.GetSession(ctx, id)
		switch {
		case grpcstatus.Code(err) == codes.NotFound:
			deleted = true
		case err != nil:
			return wrapRetry("read session", id, err)
		case session.PhaseOf(fresh) != session.PhaseStopping:
			log.Debug("stale stopping event", slog.String("current_phase", fresh.GetPhase()))
			return nil
		}
	}
	r.queue.Remove(id)
	if rn := r.sup.Get(id); rn != nil {
		log.Info("stopping runner", slog.Bool("deleted", deleted))
		rn.RequestStop(deleted)
		return nil
	}
	stopped := func() {
		if !deleted {
			r.status.Stopped(ctx, log, id)
		}
	}
	rec, err := r.claims.Get(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		stopped()
		return nil
	case errors.Is(err, registry.ErrInvalid):
		r.claims.Release(ctx, log, id) // purges the undecodable record
		stopped()
		return nil
	case err != nil:
		return wrapRetry("read claim of", id, err)
	}
	// No runner here: a claim of ours was left by a previous incarnation.
	gone, err := r.claims.OwnerGone(ctx, rec, false)
	if err != nil {
		return err
	}
	if !gone {
		if err := r.claims.RequestStop(ctx, rec); err != nil {
			return err // changed meanwhile: retry
		}
		log.Info("stop requested from owner", slog.String(logkey.Member, rec.Owner))
		return nil
	}
	// Gone owner: take the record over so nobody restarts it, then finish.
	if _, err := r.claims.TakeOver(ctx, rec); err != nil {
		return wrapRetry("take over claim of", id, err)
	}
	r.metrics.takeover(ctx, "stopped")
	stopped()
	r.claims.Release(ctx, log, id)
	return nil
}
