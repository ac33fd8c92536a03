package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
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
			rn.RequestStop(ctx, false)
		}
	}
	// In parallel: each recovery asks OwnerGone again under the session's
	// lock, and the probe of a runner that does not answer (a frozen or
	// unreachable node) costs the whole probe timeout; one after the
	// other, a frozen node's 20 sessions took 20 probe timeouts, more
	// than a sweep's deadline.
	var rg errgroup.Group
	rg.SetLimit(recoverParallel)
	for _, rec := range stale {
		rg.Go(func() error {
			r.recoverRecord(ctx, rec)
			return nil
		})
	}
	_ = rg.Wait() // recoverRecord logs its errors
	for _, rn := range r.sup.Runners() {
		if !own[rn.ID()] {
			r.checkOwnership(ctx, rn)
		}
	}
	r.sup.Resend(ctx)
	r.claims.ExpireMarkers(ctx, markerBatch)
}

// recoverParallel bounds the stale claims one sweep recovers at once
// (claim.Claims.Scan probes as many at once).
const recoverParallel = 8

// markerBatch bounds the old delete markers given a TTL per sweep
// (claim.Claims.ExpireMarkers): an upgraded bucket shrinks over a few
// sweeps without one sweep writing thousands of purges.
const markerBatch = 500

// recoverRecord recovers one stale claim under the session lock.
func (r *Reconciler) recoverRecord(ctx context.Context, rec registry.Record) {
	log := r.log.With(slog.String(logkey.SessionID, rec.SessionID))
	unlock := r.sup.Lock(rec.SessionID)
	defer unlock()
	if err := r.takeOverIfGone(ctx, log, rec, time.Time{}); err != nil && !errors.Is(err, ErrShuttingDown) {
		log.Warn("sweep: recover claim", slog.String(logkey.Err, err.Error()))
	}
}

// checkOwnership looks at a local runner that the sweep did not find
// among this replica's records. A record still this replica's is left
// alone (the index had not caught up). A record another replica owns was
// taken over while this replica was away (presumed dead: its heartbeat
// and its runner both unreachable): only then is the runner killed. A
// record that vanished (lost with a NATS store, or released by a peer
// while this replica was cut off) is written again (claim.Reassert), and
// the session is read to see whether it still wants this runner.
func (r *Reconciler) checkOwnership(ctx context.Context, rn *supervise.Runner) {
	unlock := r.sup.Lock(rn.ID())
	defer unlock()
	if r.sup.Get(rn.ID()) != rn {
		return // finished meanwhile
	}
	if rn.Lost() {
		// Another replica owns the session: this runner is being killed
		// (Resend forgets it once it exited). Marking it lost again would
		// only warn every sweep, and re-asserting its record once the new
		// owner released it would claim the session for a dead runner.
		r.sup.Drop(rn)
		return
	}
	log := r.log.With(slog.String(logkey.SessionID, rn.ID()))
	rec, err := r.claims.Get(ctx, rn.ID())
	switch {
	case err == nil && rec.Owner == r.cfg.Member:
	case err == nil:
		log.Warn("claim taken over while this replica was away; killing the local runner", slog.String(logkey.Owner, rec.Owner))
		rn.MarkLost()
	case errors.Is(err, registry.ErrNotFound):
		if !r.sup.Reassert(ctx, log, rn) {
			return
		}
		log.Info("claim re-asserted")
		if rn.Exited() {
			return // its supervisor (or Resend) reports it
		}
		if err := r.wantedHere(ctx, log, rn); err != nil {
			log.Warn("sweep: check re-asserted session", slog.String(logkey.Err, err.Error()))
		}
	default:
		log.Warn("sweep: read claim", slog.String(logkey.Err, err.Error()))
	}
}

// wantedHere reads the session of a runner no event vouches for (its
// record had vanished, or the resync's list lacked it) and stops the
// runner when the session no longer wants it: deleted (no phase written),
// no longer selected here (deselect), over (no phase written), or Stopping
// (it ends Stopped); a session moved to another project gets its runner
// replaced (move.go). A Running session's repo changes are left to its
// events and the resync (repos.go): this runs at every runner check,
// whose pass one slow runner call would eat, and would call a runner that
// keeps failing at every pass. A session whose state the informer could
// not publish
// (session.Withheld) keeps its runner unless deleted. Callers hold the
// session lock.
func (r *Reconciler) wantedHere(ctx context.Context, log *slog.Logger, rn *supervise.Runner) error {
	fresh, err := r.api.GetSession(ctx, rn.ID())
	switch {
	case grpcstatus.Code(err) == codes.NotFound:
		log.Info("session deleted without an event reaching this replica: stopping its runner")
		rn.RequestStop(ctx, true)
		return nil
	case err != nil:
		return err
	}
	switch p := session.PhaseOf(fresh); {
	case session.Withheld(fresh):
		// Unpublished (over the payload limit): its runner stays as the
		// last published state left it, as in kube mode; a delete (above)
		// still stops it.
		return nil
	case !r.cfg.Selector.Selects(fresh):
		return r.deselect(ctx, log, rn.ID(), p)
	case p.WantsRunner() && movedAway(rn, fresh):
		return r.replaceMoved(ctx, log, rn, fresh)
	case p == session.PhaseStopping:
		return r.stopSession(ctx, log, rn.ID(), false, nil)
	case p.Terminal():
		log.Info("session over without an event reaching this replica: stopping its runner", slog.String("current_phase", string(p)))
		rn.RequestStop(ctx, true)
	}
	return nil
}

// onRecord forwards a registry change of one of this replica's sessions to
// its runner as soon as the record watch sees it: a claim taken over kills
// the runner, a stop request stops it.
func (r *Reconciler) onRecord(ep registry.Endpoint) {
	rn := r.sup.Get(ep.SessionID)
	switch {
	case rn == nil:
	case ep.Owner != r.cfg.Member:
		r.log.Warn("claim taken over; killing local runner", slog.String(logkey.SessionID, ep.SessionID), slog.String(logkey.Owner, ep.Owner))
		rn.MarkLost()
	case ep.State == registry.StateStopping:
		// A peer's request through the record carries no trace context.
		rn.RequestStop(context.Background(), false)
	}
}
