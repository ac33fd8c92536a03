package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// resync reads every session and reconciles the selected ones that need
// it: Pending without a claim (start), Creating/Running without one
// (recover), and those whose runner lives here while the phase drifted
// (heal.go). Claims make it safe on every replica at once.
func (r *Reconciler) resync(ctx context.Context) {
	sessions, err := r.api.ListSessions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("resync: list sessions", slog.String(logkey.Err, err.Error()))
		}
		return
	}
	for _, s := range sessions {
		if ctx.Err() != nil {
			return
		}
		r.resyncSession(ctx, s)
	}
}

// resyncSession reconciles one listed session under its lock; the cheap
// checks before the lock skip the sessions that need nothing.
func (r *Reconciler) resyncSession(ctx context.Context, s *ambientv1.Session) {
	id, p := s.GetMetadata().GetId(), session.PhaseOf(s)
	selected, rn := r.cfg.Selector.Selects(s), r.sup.Get(id)
	switch {
	case !selected && rn == nil,
		selected && rn != nil && !drifts(rn, p),
		selected && rn == nil && !p.WantsRunner():
		return
	}
	log := r.log.With(slog.String(logkey.SessionID, id))
	unlock := r.sup.Lock(id)
	defer unlock()
	rn = r.sup.Get(id) // it may have ended meanwhile
	var err error
	switch {
	case !selected:
		// Deselected while no event reached this replica (the partition
		// owner may be a peer): the runner here goes.
		err = r.deselect(ctx, log, id, p)
	case rn != nil:
		err = r.healPhase(ctx, log, rn, p)
	case p == session.PhaseCreating || p == session.PhaseRunning:
		err = r.checkAlive(ctx, log, id, p)
	case p.WantsRunner():
		err = r.ensureRunning(ctx, log, id, time.Time{})
	}
	if err != nil && !errors.Is(err, ErrShuttingDown) {
		log.Warn("resync: reconcile session", slog.String(logkey.Err, err.Error()))
	}
}
