package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/passlog"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// resync reads every session and reconciles the selected ones that need
// it: Pending without a claim (start), Creating/Running without one
// (recover; a stale claim is the sweep's), and those whose runner lives
// here while the phase drifted (heal.go), the project changed (move.go)
// or, Running, the repos differ from what the runner has (repos.go: a
// change whose event was dead-lettered or lost would otherwise wait for
// the session's next event; repos the runner failed to apply wait for
// their backoff). The repo state of runners no longer here is dropped. Local runners whose session is not in the
// list are looked at too (stopOrphans): a session deleted while no
// informer watched is never announced, and this is the only place that
// notices. Claims make it safe on every replica at once.
// Last, the workspaces of sessions gone from the API are removed
// (removeWorkspaces).
//
// Sessions to start are not started from the list: resync returns their
// ids, and the loop starts them after resyncStartDelay, each from a read
// of its own (confirmStarts). See resyncStartDelay for why.
func (r *Reconciler) resync(ctx context.Context) (starts []string) {
	listedAt := time.Now()
	sessions, err := r.api.ListSessions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("resync: list sessions", slog.String(logkey.Err, err.Error()))
		}
		return nil
	}
	listed := make(map[string]bool, len(sessions))
	for _, s := range sessions {
		if ctx.Err() != nil {
			return starts
		}
		id := s.GetMetadata().GetId()
		listed[id] = true
		if r.resyncSession(ctx, s, false) {
			starts = append(starts, id)
		}
	}
	r.stopOrphans(ctx, listed)
	// The repo state of runners gone with no later event of their session
	// (deleted, or ended) is dropped here; nothing else would.
	r.repos.prune(r.sup.Get)
	r.removeWorkspaces(ctx, listed, listedAt)
	return starts
}

// resyncStartDelay is how long a session the resync would start waits
// for a second read. A new session reaches the API before the informer has
// looked at it; one over the event payload limit is flagged
// (EventsPublished=False, session.Withheld) only after its reference event
// was published, under 100 ms after the create in the chaos runs. A list
// taken in between shows a Pending session like any other, and starting it
// would run a session whose state no consumer was given (kube-reconciler,
// which reads the informer's cache, never sees it). The resync is the
// fallback for events that never came, so a start can wait this long; a
// session the events announce is started by its event meanwhile, and the
// second read then finds it claimed or running.
const resyncStartDelay = 2 * time.Second

// confirmStarts reconciles the sessions a resync would have started
// (resync's starts) from a read of each, taken resyncStartDelay after the
// list: a session flagged, changed, started by its event or deleted
// meanwhile is handled as it is now.
// Resyncs closer together than the delay may list a session twice; it is
// read once.
func (r *Reconciler) confirmStarts(ctx context.Context, ids []string) {
	read := make(map[string]bool, len(ids))
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		if read[id] {
			continue
		}
		read[id] = true
		s, err := r.api.GetSession(ctx, id)
		switch {
		case grpcstatus.Code(err) == codes.NotFound:
			continue // deleted: its runner, if any, is the runner check's
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("resync: read a session to start", slog.String(logkey.SessionID, id), slog.String(logkey.Err, err.Error()))
			}
			continue // the next resync lists it again
		}
		r.resyncSession(ctx, s, true)
	}
}

// stopOrphans stops the local runners whose session is gone from the API
// (wantedHere). A runner missing from the list may have started after it
// was read, so each one is confirmed with a read of its own, under the
// session lock, before it is stopped.
func (r *Reconciler) stopOrphans(ctx context.Context, listed map[string]bool) {
	for _, rn := range r.sup.Runners() {
		if ctx.Err() != nil || listed[rn.ID()] {
			continue
		}
		r.stopIfUnwanted(ctx, rn)
	}
}

// checkRunners reads the session of every local runner and stops the
// runners whose session is gone, over, Stopping or deselected, and
// replaces those whose session moved to another project (wantedHere).
// It calls no runner: repo changes are the events' and the resync's
// (repos.go), since one runner call may take runnerCallTimeout and the
// pass's budget is shared by every runner.
// It is the resync's orphan check without the list: one read per local runner (at
// most LOCAL_MAX_SESSIONS) instead of every session, so it can run every
// few seconds and bound how long a runner outlives a delete no event
// announced.
//
// A session someone holds the lock of (a start waiting for its runner's
// health, a stop, an event) is skipped until the next check: waiting for
// it would stall the loop that also sweeps claims and starts queued
// sessions, for up to a health deadline per starting runner.
//
// An unreadable session (the API down) fails the check of every runner at
// every pass: the failures of a pass are logged together, on the first
// failing pass and on the recovery (package passlog), not one warning per
// runner per pass (12 runners made about 100 lines a minute).
func (r *Reconciler) checkRunners(ctx context.Context) {
	pctx := ctx
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.CheckInterval, 5*time.Second))
	defer cancel()
	var pass passlog.Pass
	for _, rn := range r.sup.Runners() {
		if ctx.Err() != nil {
			break
		}
		if unlock, ok := r.sup.TryLock(rn.ID()); ok {
			pass.Add(r.checkLocked(ctx, rn), slog.String(logkey.SessionID, rn.ID()))
			unlock()
		}
	}
	if pctx.Err() == nil { // shutting down: failures are no news
		r.checkFails.Report(pctx, r.log, pass)
	}
}

// stopIfUnwanted runs wantedHere for rn under its session lock.
func (r *Reconciler) stopIfUnwanted(ctx context.Context, rn *supervise.Runner) {
	unlock := r.sup.Lock(rn.ID())
	defer unlock()
	if err := r.checkLocked(ctx, rn); err != nil && ctx.Err() == nil {
		r.log.Warn("check the session of a local runner", slog.String(logkey.SessionID, rn.ID()), slog.String(logkey.Err, err.Error()))
	}
}

// checkLocked runs wantedHere for rn unless it finished meanwhile, and
// returns wantedHere's error for the caller to log; the caller holds rn's
// session lock.
func (r *Reconciler) checkLocked(ctx context.Context, rn *supervise.Runner) error {
	if r.sup.Get(rn.ID()) != rn {
		return nil // finished meanwhile
	}
	return r.wantedHere(ctx, r.log.With(slog.String(logkey.SessionID, rn.ID())), rn)
}

// resyncSession reconciles one listed session under its lock; the cheap
// checks before the lock skip the sessions that need nothing. A session it
// would start is started only with startNow; otherwise it reports
// startLater, and the caller starts it from a read of its own
// (confirmStarts).
//
// A session the informer flagged as unpublished (session.Withheld: over the
// event payload limit) is left alone: its state never reached the event
// consumers, so kube-reconciler, which reconciles the informer's cache,
// never sees it either. Starting it from the list would run it in local
// mode only.
func (r *Reconciler) resyncSession(ctx context.Context, s *ambientv1.Session, startNow bool) (startLater bool) {
	id, p := s.GetMetadata().GetId(), session.PhaseOf(s)
	if session.Withheld(s) {
		r.log.Debug("resync: session's state unpublished (EventsPublished=False): left as it is", slog.String(logkey.SessionID, id), slog.String("phase", string(p)))
		return false
	}
	selected, rn := r.cfg.Selector.Selects(s), r.sup.Get(id)
	switch {
	case !selected && rn == nil,
		selected && rn != nil && !drifts(rn, p) && !(p.WantsRunner() && movedAway(rn, s)) && !r.reposPending(rn, s, false),
		selected && rn == nil && !p.WantsRunner() && p != session.PhaseStopping:
		return false
	}
	log := r.log.With(slog.String(logkey.SessionID, id))
	lk := r.lock(id)
	defer lk.release()
	rn = r.sup.Get(id) // it may have ended meanwhile
	var err error
	switch {
	case !selected:
		// Deselected while no event reached this replica (the partition
		// owner may be a peer): the runner here goes.
		err = r.deselect(ctx, log, id, p)
	case rn != nil && p.WantsRunner() && movedAway(rn, s):
		err = r.move(ctx, log, rn) // from a read of its own: the list may be old
	case rn != nil:
		err = r.healPhase(ctx, log, rn, p, time.Time{})
		if err == nil && r.sup.Get(id) == rn {
			// Repos changed with no event to say so (repos.go): it reads
			// the session, and calls the runner, only if the list shows a
			// difference.
			err = r.reconcileRepos(ctx, log, rn, s, false)
		}
		r.repos.forget(id, r.sup.Get(id))
	case p == session.PhaseCreating || p == session.PhaseRunning:
		if _, gerr := r.claims.Get(ctx, id); gerr == nil {
			// Claimed: by a live owner, or the sweep takes the claim over
			// (8 at a time). Here, one session after the other, each probe
			// of a frozen or unreachable owner's runner would cost the
			// probe timeout, and hold up this loop's sweeps meanwhile
			// (a paused node's 10 sessions took 10 s).
			return false
		}
		err = r.checkAlive(ctx, log, id, p, time.Time{})
	case p == session.PhaseStopping:
		// A stop whose Stopped was never written (the write failed, or the
		// replica that held the claim let it go) would stay Stopping for
		// good: the API accepts neither a start nor a stop of it. With a
		// runner on a live peer this asks it to stop (a no-op when it is
		// stopping already); with none it writes Stopped.
		err = r.stopSession(ctx, log, id, false, s)
	case p.WantsRunner():
		if !startNow {
			return true // see resyncStartDelay
		}
		r.queue.SetProject(id, s.GetProjectId())
		err = r.ensureRunning(ctx, log, lk, id, time.Time{})
	}
	if err != nil && !errors.Is(err, ErrShuttingDown) {
		log.Warn("resync: reconcile session", slog.String(logkey.Err, err.Error()))
	}
	return false
}
