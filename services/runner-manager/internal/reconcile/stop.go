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
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// stopSession handles Stopping (deleted=false) and DELETED (deleted=true).
// A runner here is stopped by its supervisor (SIGTERM, SIGKILL after the
// grace, then Stopped); a runner on a live peer gets a stop request through
// its registry record; no runner at all means Stopped at once (nothing is
// written for a deleted session). seen, when set, is the Stopping session
// of the event.
func (r *Reconciler) stopSession(ctx context.Context, log *slog.Logger, id string, deleted bool, seen *ambientv1.Session) error {
	if !deleted {
		// Level check: a replayed Stopping event must not stop a session
		// that has been restarted since.
		fresh, err := r.api.GetSession(ctx, id)
		switch {
		case grpcstatus.Code(err) == codes.NotFound:
			deleted = true
		case err != nil:
			return wrapRetry("read session", id, err)
		case session.PhaseOf(fresh) != session.PhaseStopping && r.overwritten(id, seen):
			// Not stale: this replica's own Creating/Running write landed
			// just after the user's Stopping and replaced it (the API has
			// no precondition on status writes: status.WriteIf).
			log.Warn("stop request overwritten by this replica's phase write: stopping the runner", slog.String("current_phase", fresh.GetPhase()))
		case session.PhaseOf(fresh) != session.PhaseStopping:
			log.Debug("stale stopping event", slog.String("current_phase", fresh.GetPhase()))
			return nil
		}
	}
	r.queue.Remove(id)
	if rn := r.sup.Get(id); rn != nil {
		log.Info("stopping runner", slog.Bool("deleted", deleted))
		rn.RequestStop(ctx, deleted)
		return nil
	}
	// A Stopped that cannot be written is retried (the event, or the
	// resync's next pass): nothing else would take the session out of
	// Stopping.
	stopped := func() error {
		if deleted {
			return nil
		}
		if err := r.status.Stopped(ctx, log, id); err != nil {
			return wrapRetry("write stopped", id, err)
		}
		return nil
	}
	rec, err := r.claims.Get(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return stopped()
	case errors.Is(err, registry.ErrInvalid):
		r.claims.Release(ctx, log, id) // purges the undecodable record
		return stopped()
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
		log.Info("stop requested from owner", slog.String(logkey.Owner, rec.Owner))
		return nil
	}
	if rec.Final != nil && !deleted {
		// Its runner ended and the phase it ended with waits to be written.
		return r.adoptFinal(ctx, log, rec)
	}
	// Gone owner: take the record over so nobody restarts it, then finish.
	if _, err := r.claims.TakeOver(ctx, rec); err != nil {
		return wrapRetry("take over claim of", id, err)
	}
	r.metrics.takeover(ctx, "stopped")
	err = stopped()
	// Released also when the write failed: the retry finds no claim and
	// writes Stopped again.
	r.claims.Release(ctx, log, id)
	return err
}

// overwritten reports whether seen, the session of a Stopping event, was
// replaced by this replica's own Creating/Running write of its local
// runner (supervise.Runner.Overwrote).
func (r *Reconciler) overwritten(id string, seen *ambientv1.Session) bool {
	rn := r.sup.Get(id)
	if rn == nil || seen == nil || session.PhaseOf(seen) != session.PhaseStopping {
		return false
	}
	return rn.Overwrote(seen.GetMetadata().GetUpdatedAt().AsTime())
}
