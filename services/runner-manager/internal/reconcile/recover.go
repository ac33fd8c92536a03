package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// checkAlive handles Creating/Running events (seen is the phase): the
// session must have a live runner somewhere. The echo of our own writes
// ends at the first check, or, for a Creating echo that arrives after the
// runner became healthy, at healPhase's re-read.
func (r *Reconciler) checkAlive(ctx context.Context, log *slog.Logger, id, seen string) error {
	if rn := r.localRun(id); rn != nil {
		return r.healPhase(ctx, log, rn, seen)
	}
	rec, err := registry.Get(ctx, r.kv, id)
	invalid := errors.Is(err, registry.ErrInvalid)
	switch {
	case err == nil:
		return r.takeOverIfDead(ctx, log, rec, time.Time{})
	case !errors.Is(err, registry.ErrNotFound) && !invalid:
		return wrapRetry("read claim of", id, err)
	}
	// No claim at all. Re-read: a runner that just ended wrote its final
	// phase before it released the claim.
	fresh, err := r.api.GetSession(ctx, id)
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		return wrapRetry("read session", id, err)
	}
	if p := fresh.GetPhase(); p != PhaseCreating && p != PhaseRunning {
		return nil
	}
	if invalid {
		r.release(ctx, log, id)
	}
	ep := r.claimRecord(id, fresh.GetProjectId())
	rev, err := registry.Claim(ctx, r.kv, ep)
	if err != nil {
		if errors.Is(err, registry.ErrClaimed) {
			return nil
		}
		return wrapRetry("claim", id, err)
	}
	return r.recoverClaimed(ctx, log, fresh, startOpts{restartOf: "(none registered)", claim: ep, rev: rev})
}

// takeOverIfDead leaves a claim of a live owner alone and takes over one
// whose owner is dead (or is this replica's previous incarnation, which has
// no runner here), with compare-and-swap on the stale revision so exactly
// one replica wins.
func (r *Reconciler) takeOverIfDead(ctx context.Context, log *slog.Logger, rec registry.Record, received time.Time) error {
	if rec.Owner != r.cfg.Member {
		alive, err := r.members.Alive(ctx, rec.Owner)
		if err != nil {
			return wrapRetry("check owner of", rec.SessionID, err)
		}
		if alive {
			return nil
		}
	} else if r.localRun(rec.SessionID) != nil {
		return nil
	}
	ep := r.claimRecord(rec.SessionID, rec.ProjectID)
	rev, err := registry.Register(ctx, r.kv, ep, rec.Revision)
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
		r.release(ctx, log, rec.SessionID)
		if status.Code(err) == codes.NotFound {
			r.metrics.takeover(ctx, "deleted")
			return nil
		}
		return wrapRetry("read session", rec.SessionID, err)
	}
	return r.recoverClaimed(ctx, log, fresh, startOpts{restartOf: rec.Owner, received: received, claim: ep, rev: rev})
}

// recoverClaimed decides the fate of a claimed session whose runner is gone.
// o carries the claim and the lost owner's name (o.restartOf).
func (r *Reconciler) recoverClaimed(ctx context.Context, log *slog.Logger, s *ambientv1.Session, o startOpts) error {
	id := s.GetMetadata().GetId()
	lostOwner := o.restartOf
	o.attempt = 2
	switch p := s.GetPhase(); {
	case !r.cfg.Selector.Match(s):
		r.metrics.takeover(ctx, "not_selected")
		r.release(ctx, log, id)
		return nil
	case p == PhaseStopping:
		r.metrics.takeover(ctx, "stopped")
		r.markStopped(ctx, log, id, false)
		r.release(ctx, log, id)
		return nil
	case p == "" || p == PhasePending:
		r.metrics.takeover(ctx, "started")
		o.restartOf = "" // it never ran: a plain start
		return r.startClaimed(ctx, log, s, o)
	case p == PhaseCreating || p == PhaseRunning:
		if r.cfg.LostPolicy == LostRestart {
			r.metrics.takeover(ctx, "restarted")
			return r.startClaimed(ctx, log, s, o)
		}
		r.metrics.takeover(ctx, "failed")
		msg := ReasonRunnerLost + ": the runner's owner " + lostOwner + " is gone"
		conds := parseConditions(s.Conditions).set(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonRunnerLost, Message: msg}, time.Now())
		r.fail(ctx, log, id, conds, ReasonRunnerLost)
		r.release(ctx, log, id)
		return nil
	default: // terminal: nothing runs, nothing to report
		r.metrics.takeover(ctx, "terminal")
		r.release(ctx, log, id)
		return nil
	}
}

// sweep makes sure no claim outlives its runner: claims of dead owners (and
// this replica's claims without a local runner) are recovered, local runners
// whose claim moved to another owner are killed, and stop requests missed by
// the watch are applied.
func (r *Reconciler) sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.SweepInterval, 5*time.Second))
	defer cancel()
	recs, err := registry.List(ctx, r.kv)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("sweep: list claims", slog.String(logkey.Err, err.Error()))
		}
		return
	}
	alive := map[string]bool{r.cfg.Member: true}
	mine := map[string]bool{}
	for _, rec := range recs {
		if rec.Owner == r.cfg.Member {
			mine[rec.SessionID] = true
		}
		live, ok := alive[rec.Owner]
		if !ok {
			if live, err = r.members.Alive(ctx, rec.Owner); err != nil {
				r.log.Warn("sweep: liveness", slog.String(logkey.Member, rec.Owner), slog.String(logkey.Err, err.Error()))
				continue
			}
			alive[rec.Owner] = live
		}
		if rec.Owner == r.cfg.Member {
			if rn := r.localRun(rec.SessionID); rn != nil {
				if rec.State == registry.StateStopping {
					rn.requestStop(false)
				}
				continue
			}
		} else if live {
			continue
		}
		r.recoverRecord(ctx, rec)
	}
	r.mu.Lock()
	var orphans, unsent []*run
	for id, rn := range r.runs {
		if !mine[id] {
			orphans = append(orphans, rn)
		}
		rn.mu.Lock()
		if rn.unsent != nil {
			unsent = append(unsent, rn)
		}
		rn.mu.Unlock()
	}
	r.mu.Unlock()
	for _, rn := range orphans {
		r.checkOwnership(ctx, rn)
	}
	for _, rn := range unsent {
		r.retryUnsent(ctx, rn)
	}
}

// retryUnsent retries a Creating/Running write that failed (API outage), so
// the session's phase catches up with its runner.
func (r *Reconciler) retryUnsent(ctx context.Context, rn *run) {
	unlock := r.locks.lock(rn.id)
	defer unlock()
	rn.mu.Lock()
	u := rn.unsent
	skip := rn.final || rn.stopped
	rn.mu.Unlock()
	if u == nil || skip {
		return
	}
	if err := r.writeStatus(ctx, rn.id, *u); err != nil {
		r.log.Warn("retry phase write", slog.String(logkey.SessionID, rn.id), slog.String(logkey.Phase, u.Phase), slog.String(logkey.Err, err.Error()))
		return
	}
	rn.mu.Lock()
	if rn.unsent == u {
		rn.unsent = nil
	}
	rn.mu.Unlock()
}

// recoverRecord recovers one stale claim under the session lock.
func (r *Reconciler) recoverRecord(ctx context.Context, rec registry.Record) {
	log := r.log.With(slog.String(logkey.SessionID, rec.SessionID))
	unlock := r.locks.lock(rec.SessionID)
	defer unlock()
	if err := r.takeOverIfDead(ctx, log, rec, time.Time{}); err != nil {
		if !errors.Is(err, ErrShuttingDown) {
			log.Warn("sweep: recover claim", slog.String(logkey.Err, err.Error()))
		}
	}
}

// checkOwnership kills a local runner whose claim is gone or owned by
// another replica (this replica was presumed dead, e.g. cut off from NATS
// longer than the member TTL, and the session was restarted elsewhere).
func (r *Reconciler) checkOwnership(ctx context.Context, rn *run) {
	unlock := r.locks.lock(rn.id)
	defer unlock()
	if r.localRun(rn.id) != rn {
		return // finished meanwhile
	}
	rec, err := registry.Get(ctx, r.kv, rn.id)
	switch {
	case err == nil && rec.Owner == r.cfg.Member:
		return
	case err == nil, errors.Is(err, registry.ErrNotFound):
		r.log.Warn("runner lost its claim; killing it", slog.String(logkey.SessionID, rn.id), slog.String("owner", rec.Owner))
		rn.markLost()
	}
}

// watchRecords forwards stop requests and takeovers of this replica's
// sessions to their supervisors as soon as the registry changes.
func (r *Reconciler) watchRecords(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := r.watchOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("watch claims", slog.String(logkey.Err, err.Error()))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (r *Reconciler) watchOnce(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	defer func() {
		// Stop ends the subscription; nothing to handle.
		_ = w.Stop()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			ep, err := registry.Decode(e.Value())
			if err != nil {
				continue
			}
			rn := r.localRun(ep.SessionID)
			switch {
			case rn == nil:
			case ep.Owner != r.cfg.Member:
				r.log.Warn("claim taken over; killing local runner", slog.String(logkey.SessionID, ep.SessionID), slog.String("owner", ep.Owner))
				rn.markLost()
			case ep.State == registry.StateStopping:
				rn.requestStop(false)
			}
		}
	}
}

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
	id, p := s.GetMetadata().GetId(), s.GetPhase()
	selected, rn := r.cfg.Selector.Match(s), r.localRun(id)
	wantsRunner := p == "" || p == PhasePending || p == PhaseCreating || p == PhaseRunning
	switch {
	case !selected && rn == nil,
		selected && rn != nil && !rn.drifts(p),
		selected && rn == nil && !wantsRunner:
		return
	}
	log := r.log.With(slog.String(logkey.SessionID, id))
	unlock := r.locks.lock(id)
	defer unlock()
	rn = r.localRun(id) // it may have ended meanwhile
	var err error
	switch {
	case !selected:
		// Deselected while no event reached this replica (the partition
		// owner may be a peer): the runner here goes.
		err = r.deselect(ctx, log, id, p)
	case rn != nil:
		err = r.healPhase(ctx, log, rn, p)
	case p == PhaseCreating || p == PhaseRunning:
		err = r.checkAlive(ctx, log, id, p)
	case wantsRunner:
		err = r.ensureRunning(ctx, log, id, 2, time.Time{})
	}
	if err != nil && !errors.Is(err, ErrShuttingDown) {
		log.Warn("resync: reconcile session", slog.String(logkey.Err, err.Error()))
	}
}
