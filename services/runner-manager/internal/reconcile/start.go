package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
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

// ensureRunning handles a Pending (or phase-less) session: claim it, re-read
// it, start its runner. The claim comes before the re-read so a runner that
// just finished (it writes its final phase before it releases the claim) is
// seen as finished, and a replayed Pending event starts nothing. received
// is when the event arrived (zero when no event asked).
//
// Only the claim happens here: the re-read, the spawn and everything after
// run on a goroutine of the reconciler (startClaimed), which the caller's
// session lock lk is handed to, so that the consumer group's one message
// in flight per member is acked after one registry round trip and the
// starts of a burst of sessions run in parallel (issue 15: 50 sessions
// created at once all Running within the slowest single start + 200 ms).
// The session stays locked until its runner is spawned (or the start
// given up), so no other event, sweep or resync acts on it meanwhile.
func (r *Reconciler) ensureRunning(ctx context.Context, log *slog.Logger, lk *sessionLock, id string, received time.Time) error {
	// A lost runner that has exited is gone from this replica's point of
	// view (another replica ran the session since); the start goes ahead.
	if rn := r.sup.Get(id); rn != nil && !r.sup.Drop(rn) {
		// It runs here: a duplicate event, or a Pending written over the
		// running session (heal.go puts Running back).
		return r.healPhase(ctx, log, rn, session.PhasePending, time.Time{})
	}
	if project, ok := r.queue.ProjectOf(id); ok && r.sup.FreeFor(project) == 0 {
		// Still no room (on the replica, or for its project); the session
		// starts when a runner ends (the echo of our own capacity
		// condition lands here too).
		return nil
	}
	if !r.sup.Ready() {
		return ErrShuttingDown // retried by whichever replica owns the event then
	}
	// Claim first: on the common path (nobody owns it) that is the only
	// registry round trip; an existing claim is then looked at.
	held, err := r.claims.Claim(ctx, id, "")
	// A claim released between the claim and the read (a start that gave
	// the session back, a peer's release) is claimed again at once: a
	// start from the capacity queue has no event to be redelivered, so
	// an error here would leave the session to the next resync.
	for tries := 1; errors.Is(err, registry.ErrClaimed); tries++ {
		rec, gerr := r.claims.Get(ctx, id)
		switch {
		case gerr == nil:
			return r.takeOverIfGone(ctx, log, rec, received)
		case errors.Is(gerr, registry.ErrInvalid):
			r.claims.Release(ctx, log, id) // purges the undecodable record
			return wrapRetry("claim", id, errors.New("purged an invalid record; retrying"))
		case errors.Is(gerr, registry.ErrNotFound) && tries < claimTries:
			held, err = r.claims.Claim(ctx, id, "")
		case errors.Is(gerr, registry.ErrNotFound):
			return wrapRetry("claim", id, errors.New("claim released meanwhile; retrying"))
		default:
			return wrapRetry("read claim of", id, gerr)
		}
	}
	if err != nil {
		return wrapRetry("claim", id, err)
	}
	unlock := lk.handOff()
	r.goStart(ctx, id, func(ctx context.Context) {
		defer unlock()
		if err := r.startClaimed(ctx, log, id, held, received); err != nil && !errors.Is(err, ErrShuttingDown) {
			log.Warn("start session; the resync retries", slog.String(logkey.Err, err.Error()))
		}
	})
	return nil
}

// claimTries is how often ensureRunning claims a session whose claim was
// released between its claim and its read of the claim.
const claimTries = 3

// Re-read retries of a claimed session (startClaimed): its event is acked
// already, so a transient API error is retried here, briefly; after that
// the claim is released and the resync starts the session.
const (
	rereadTries = 4
	rereadFirst = 100 * time.Millisecond
)

// startClaimed re-reads a session this replica has just claimed (held)
// and starts its runner if it is still Pending (or has no phase) and still
// selected here. Any other outcome releases the claim. Callers hold the
// session lock.
func (r *Reconciler) startClaimed(ctx context.Context, log *slog.Logger, id string, held registry.Record, received time.Time) error {
	b := &backoff.ExponentialBackOff{InitialInterval: rereadFirst, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: time.Second}
	fresh, err := backoff.Retry(ctx, func() (*ambientv1.Session, error) {
		s, err := r.api.GetSession(ctx, id)
		if grpcstatus.Code(err) == codes.NotFound {
			return nil, backoff.Permanent(err)
		}
		return s, err
	}, backoff.WithBackOff(b), backoff.WithMaxTries(rereadTries))
	if err != nil {
		r.claims.Release(ctx, log, id)
		if grpcstatus.Code(err) == codes.NotFound {
			return nil
		}
		return wrapRetry("read session", id, err)
	}
	switch p := session.PhaseOf(fresh); {
	case !r.cfg.Selector.Selects(fresh):
		// Moved out of this deployment's selection (another project,
		// other labels) since it was queued or its event was handled,
		// with no event of the change handled here yet (it may never
		// come: dead-lettered, or made while no informer led). Another
		// executor owns it now: started here as well, it would run twice
		// until the move event or the runner check stopped it. No phase
		// is written, as for any deselection (deselect).
		log.Info("not selected any more; not started here")
		r.queue.Remove(id)
		r.claims.Release(ctx, log, id)
		return nil
	case p == session.PhaseStopping:
		// Stopped before its runner started. A peer that handled the stop
		// meanwhile saw this replica's claim and left the stop to it (a
		// stop request on the record), so the Stopped is this replica's
		// to write, or nobody's.
		log.Info("stopped before its runner started")
		err := r.status.Stopped(ctx, log, id)
		r.claims.Release(ctx, log, id) // a failed write is retried with no claim left
		return err
	case p != session.PhaseNone && p != session.PhasePending:
		log.Debug("stale pending event", slog.String("current_phase", string(p)))
		r.claims.Release(ctx, log, id)
		return nil
	}
	return r.start(ctx, log, fresh, supervise.Start{Claim: held, Received: received})
}

// start hands a claimed session to the supervisor and decides what a
// capacity shortage means: a plain start waits in the queue; a restart of
// a lost runner fails the session (RunnerLost), since nothing else would
// tell its user that the runner is gone (also when the only ports left
// wait out PORT_REUSE_DELAY: a range sized for LOCAL_MAX_SESSIONS plus the
// ports released within the delay never gets there). A shortage of
// cooling ports arms the wake-up of the queue for when the first of them
// is reusable.
func (r *Reconciler) start(ctx context.Context, log *slog.Logger, s *ambientv1.Session, o supervise.Start) error {
	id := s.GetMetadata().GetId()
	err := r.sup.Start(ctx, log, s, o)
	if !errors.Is(err, runner.ErrAtCapacity) && !errors.Is(err, runner.ErrNoPorts) {
		if err == nil {
			r.queue.Remove(id)
		}
		return err
	}
	reason := status.ReasonCapacityExceeded
	if errors.Is(err, runner.ErrNoPorts) {
		reason = status.ReasonNoPortAvailable
	}
	var cooling *runner.PortsCoolingError
	if errors.As(err, &cooling) {
		r.cooled.arm(cooling.ReusableIn)
	}
	r.metrics.capacityWait(ctx, reason)
	msg := reason + ": " + err.Error()
	conds := status.Conditions(s)
	switch {
	case o.Restart != nil:
		msg = status.ReasonRunnerLost + ": owner " + o.Restart.String() + " lost and no capacity to restart: " + msg
		conds = conds.Set(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: status.ReasonRunnerLost, Message: msg}, time.Now())
		r.status.Fail(ctx, log, id, conds, status.ReasonRunnerLost)
		return nil
	}
	return r.deferForCapacity(ctx, log, id, s.GetProjectId(), conds, reason, msg)
}

// deferForCapacity reports a capacity shortage on the session (condition
// RunnerStarted=False with the reason, phase unchanged) and queues it under
// its project: it starts when a local runner ends and its project's turn
// comes, when a port that waits out PORT_REUSE_DELAY is reusable again (or
// a resync finds it). The event is acked, not naked: the
// consumer group delivers one message per member at a time, so a delayed
// nak would stall every other session of this replica.
func (r *Reconciler) deferForCapacity(ctx context.Context, log *slog.Logger, id, project string, conds session.Conditions, reason, msg string) error {
	r.queue.Add(id, project)
	if c, ok := conds.Get(status.CondRunnerStarted); !ok || c.Status != session.StatusFalse || c.Reason != reason {
		conds = conds.Set(session.Condition{Type: status.CondRunnerStarted, Status: session.StatusFalse, Reason: reason, Message: msg + "; starts when capacity frees up"}, time.Now())
		if err := r.status.Write(ctx, id, status.Update{Conditions: conds}); err != nil {
			log.Warn("write capacity condition", slog.String(logkey.Err, err.Error()))
		}
	}
	log.Info("session deferred for capacity", slog.String(logkey.Reason, reason))
	return nil
}

// startWaiting starts queued sessions while capacity lasts (a runner
// ended), in the queue's order: projects in turn, each project's longest
// waiting session first. The starts it hands off do not hold their slots
// yet, so it leaves a slot to each start still in flight (r.starting):
// otherwise every queued session would be claimed and re-read at each
// wake-up, all but one would be queued again behind the others, and the
// turns would not be kept. It tries at most as many sessions as waited
// when it began: a start that finds no room after all (ports held by
// other processes of the host) queues its session again, and must not be
// retried in the same pass. A project at LOCAL_MAX_SESSIONS_PER_PROJECT
// (its runners and its starts in flight) is passed over, keeping its turn.
func (r *Reconciler) startWaiting(ctx context.Context) {
	full := func(project string) bool {
		return r.sup.FreeFor(project) <= r.projectStarts.count(project)
	}
	for n := r.queue.Len(); n > 0; n-- {
		if ctx.Err() != nil {
			return
		}
		if int64(r.sup.Free()) <= r.starting.Load() {
			// No room. Ports that wait out PORT_REUSE_DELAY are not
			// counted free; when one limits the room, no runner's end
			// may come to wake the queue when it is reusable.
			if wait, ok := r.mgr.Pool().ReusableIn(); ok {
				r.cooled.arm(wait)
			}
			return
		}
		id, ok := r.queue.Next(full)
		if !ok {
			return
		}
		log := r.log.With(slog.String(logkey.SessionID, id))
		lk := r.lock(id)
		project, waits := r.queue.Take(id)
		if !waits {
			lk.release() // stopped, deleted or started meanwhile
			continue
		}
		r.projectStarts.add(id, project)
		err := r.ensureRunning(ctx, log, lk, id, time.Now())
		r.projectStarts.unlessHanded(id)
		lk.release()
		if err != nil {
			log.Warn("start deferred session", slog.String(logkey.Err, err.Error()))
		}
	}
}
