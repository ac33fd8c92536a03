package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// sweep makes sure no claim outlives its runner: claims of gone owners (and
// this replica's claims without a local runner) are recovered, local runners
// whose claim moved to another owner are killed, stop requests missed by
// the record watch are applied, and failed phase writes are retried.
func (r *Reconciler) sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.SweepInterval, 5*time.Second))
	defer cancel()
	runsHere := func(id string) bool { return r.sup.Get(id) != nil }
	mine, stale, err := r.claims.Scan(ctx, runsHere)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("sweep: list claims", slog.String(logkey.Err, err.Error()))
		}
		return
	}
	own := make(map[string]bool, len(mine))
	for _, rec := range mine {
		own[rec.SessionID] = true
		if rn := r.sup.Get(rec.SessionID); rn != nil && rec.State == registry.StateStopping {
			rn.RequestStop(false)
		}
	}
	for _, rec := range stale {
		r.recoverRecord(ctx, rec)
	}
	for _, rn := range r.sup.Runners() {
		if !own[rn.ID()] {
			r.checkOwnership(ctx, rn)
		}
	}
	r.sup.Resend(ctx)
}

// recoverRecord recovers one stale claim under the session lock.
func (r *Reconciler) recoverRecord(ctx context.Context, rec registry.Record) {
	log := r.log.With(slog.String(logkey.SessionID, rec.SessionID))
	unlock := r.sup.Lock(rec.SessionID)
	defer unlock()
	if err := r.takeOverIfGone(ctx, log, rec, time.Time{}); err != nil && !errors.Is(err, ErrShuttingDown) {
		log.Warn("sweep: recover claim", slog.String(logkey.Err, err.Error()))
	}
}

// checkOwnership kills a local runner whose claim is gone or owned by
// another replica (this replica was presumed dead, e.g. cut off from NATS
// longer than the member TTL, and the session was restarted elsewhere).
func (r *Reconciler) checkOwnership(ctx context.Context, rn *supervise.Runner) {
	unlock := r.sup.Lock(rn.ID())
	defer unlock()
	if r.sup.Get(rn.ID()) != rn {
		return // finished meanwhile
	}
	rec, err := r.claims.Get(ctx, rn.ID())
	switch {
	case err == nil && rec.Owner == r.cfg.Member:
		return
	case err == nil, errors.Is(err, registry.ErrNotFound):
		r.log.Warn("runner lost its claim; killing it", slog.String(logkey.SessionID, rn.ID()), slog.String("owner", rec.Owner))
		rn.MarkLost()
	}
}

// onRecord forwards a registry change of one of this replica's sessions to
// its runner as soon as the record watch sees it: a claim taken over kills
// the runner, a stop request stops it.
func (r *Reconciler) onRecord(ep registry.Endpoint) {
	rn := r.sup.Get(ep.SessionID)
	switch {
	case rn == nil:
	case ep.Owner != r.cfg.Member:
		r.log.Warn("claim taken over; killing local runner", slog.String(logkey.SessionID, ep.SessionID), slog.String("owner", ep.Owner))
		rn.MarkLost()
	case ep.State == registry.StateStopping:
		rn.RequestStop(false)
	}
}
