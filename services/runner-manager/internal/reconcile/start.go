package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/registry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// ensureRunning handles a Pending (or phase-less) session: claim it, re-read
// it, start its runner. The claim comes before the re-read so a runner that
// just finished (it writes its final phase before it releases the claim) is
// seen as finished, and a replayed Pending event starts nothing.
func (r *Reconciler) ensureRunning(ctx context.Context, log *slog.Logger, id string, attempt uint64, received time.Time) error {
	if rn := r.localRun(id); rn != nil {
		// It runs here: a duplicate event, or a Pending written over the
		// running session (heal.go puts Running back).
		return r.healPhase(ctx, log, rn, PhasePending)
	}
	if r.isWaiting(id) && !r.mgr.HasCapacity() {
		// Still no room; the session starts when a runner ends (the echo of
		// our own capacity condition lands here too).
		return nil
	}
	// Claim first: on the common path (nobody owns it) that is the only
	// registry round trip; an existing claim is then looked at.
	claimEP := r.claimRecord(id, "")
	rev, err := registry.Claim(ctx, r.kv, claimEP)
	if errors.Is(err, registry.ErrClaimed) {
		rec, gerr := registry.Get(ctx, r.kv, id)
		switch {
		case gerr == nil:
			return r.takeOverIfDead(ctx, log, rec, received)
		case errors.Is(gerr, registry.ErrInvalid):
			if err := registry.Release(ctx, r.kv, id, r.cfg.Member); err != nil {
				return wrapRetry("purge invalid record of", id, err)
			}
			return wrapRetry("claim", id, errors.New("purged an invalid record; retrying"))
		case errors.Is(gerr, registry.ErrNotFound):
			return wrapRetry("claim", id, errors.New("claim released meanwhile; retrying"))
		default:
			return wrapRetry("read claim of", id, gerr)
		}
	}
	if err != nil {
		return wrapRetry("claim", id, err)
	}
	fresh, err := r.api.GetSession(ctx, id)
	if err != nil {
		r.release(ctx, log, id)
		if status.Code(err) == codes.NotFound {
			return nil
		}
		return wrapRetry("read session", id, err)
	}
	if p := fresh.GetPhase(); p != "" && p != PhasePending {
		log.Debug("stale pending event", slog.String("current_phase", p))
		r.release(ctx, log, id)
		return nil
	}
	return r.startClaimed(ctx, log, fresh, startOpts{attempt: attempt, received: received, claim: claimEP, rev: rev})
}

// startOpts tunes startClaimed for the path that calls it.
type startOpts struct {
	attempt  uint64
	received time.Time
	// restartOf names the lost owner when this start replaces a runner that
	// died; capacity problems then fail the session instead of waiting.
	restartOf string
	// claim and rev are the claim record as written, when the caller knows
	// them (saves a registry read).
	claim registry.Endpoint
	rev   uint64
}

// claimRecord is a fresh claim by this replica.
func (r *Reconciler) claimRecord(id, projectID string) registry.Endpoint {
	return registry.Endpoint{SessionID: id, ProjectID: projectID, Owner: r.cfg.Member, StartedAt: time.Now().UTC(), State: registry.StateClaimed}
}

// startClaimed starts the runner of a session this replica has claimed. It
// always either hands the runner to a supervisor or releases the claim.
func (r *Reconciler) startClaimed(ctx context.Context, log *slog.Logger, s *ambientv1.Session, o startOpts) error {
	id := s.GetMetadata().GetId()
	conds := parseConditions(s.Conditions)
	r.life.RLock()
	defer r.life.RUnlock()
	if r.closing {
		r.release(ctx, log, id)
		return ErrShuttingDown
	}
	spawnStart := time.Now()
	proc, err := r.mgr.Start(ctx, sessionOf(s))
	spawnTook := time.Since(spawnStart)
	switch {
	case errors.Is(err, runner.ErrAtCapacity), errors.Is(err, runner.ErrNoPorts):
		r.release(ctx, log, id)
		return r.deferForCapacity(ctx, log, id, conds, err, o)
	case errors.Is(err, runner.ErrBadSessionID):
		conds = conds.set(Condition{Type: CondProcessSpawned, Status: StatusFalse, Reason: ReasonInvalidSessionID, Message: err.Error()}, time.Now())
		r.fail(ctx, log, id, conds, ReasonInvalidSessionID)
		r.release(ctx, log, id)
		return nil
	case err != nil:
		msg := ReasonProcessSpawnFailed + ": " + err.Error()
		conds = conds.set(Condition{Type: CondProcessSpawned, Status: StatusFalse, Reason: ReasonProcessSpawnFailed, Message: msg}, time.Now())
		conds = conds.set(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonProcessSpawnFailed, Message: msg}, time.Now())
		r.fail(ctx, log, id, conds, ReasonProcessSpawnFailed)
		r.release(ctx, log, id)
		return nil
	}
	r.metrics.spawn(ctx)
	r.clearWaiting(id)
	now := time.Now()
	started := Condition{Type: CondRunnerStarted, Status: StatusUnknown, Reason: ReasonStarted, Message: "waiting for the health check"}
	if o.restartOf != "" {
		started.Reason, started.Message = ReasonRestarted, "restarted after owner "+o.restartOf+" was lost"
	}
	conds = conds.set(Condition{Type: CondProcessSpawned, Status: StatusTrue, Reason: ReasonSpawned, Message: fmt.Sprintf("pid %d, port %d", proc.PID, proc.Port)}, now)
	conds = conds.set(Condition{Type: CondHealthCheckPassed, Status: StatusUnknown, Reason: "Polling"}, now)
	conds = conds.set(started, now)
	rn := newRun(id, proc, o.received, conds)
	rn.ep, rn.rev = o.claim, o.rev
	rn.projectID = s.GetProjectId()
	r.mu.Lock()
	r.runs[id] = rn
	r.mu.Unlock()
	log.Info("runner spawned", slog.Int(logkey.PID, proc.PID), slog.Int(logkey.Port, proc.Port), slog.Duration(logkey.Duration, spawnTook))
	// The supervisor registers the endpoint and writes Creating, so the
	// handler (one per member at a time) is free for the next event.
	r.supervise(ctx, rn)
	return nil
}

// onSpawned registers the endpoint (state starting) and writes Creating.
func (r *Reconciler) onSpawned(ctx context.Context, log *slog.Logger, rn *run) {
	unlock := r.locks.lock(rn.id)
	defer unlock()
	if err := r.updateRecord(ctx, rn, func(e *registry.Endpoint) {
		e.ProjectID = rn.projectID
		e.Host, e.Port, e.PID = r.cfg.AdvertiseHost, rn.proc.Port, rn.proc.PID
		e.StartedAt, e.State = rn.proc.StartedAt.UTC(), registry.StateStarting
	}); err != nil {
		log.Warn("register endpoint", slog.String(logkey.Err, err.Error()))
	}
	rn.mu.Lock()
	skip, conds := rn.stopped || rn.final, rn.conds
	rn.mu.Unlock()
	if skip {
		return
	}
	u := statusUpdate{Phase: PhaseCreating, Conditions: conds}
	if err := r.writeStatus(ctx, rn.id, u); err != nil {
		rn.setUnsent(&u)
		log.Warn("write phase; the sweep retries", slog.String(logkey.Phase, PhaseCreating), slog.String(logkey.Err, err.Error()))
	}
}

// deferForCapacity reports a capacity shortage on the session (condition
// RunnerStarted=False with the reason, phase unchanged) and queues it: it
// starts as soon as a local runner ends (or a resync finds it). The event is
// acked, not naked: the consumer group delivers one message per member at a
// time, so a delayed nak would stall every other session of this replica.
// A restart that finds no room fails the session with RunnerLost instead.
func (r *Reconciler) deferForCapacity(ctx context.Context, log *slog.Logger, id string, conds conditions, cause error, o startOpts) error {
	reason := ReasonCapacityExceeded
	if errors.Is(cause, runner.ErrNoPorts) {
		reason = ReasonNoPortAvailable
	}
	r.metrics.capacityWait(ctx, reason)
	msg := reason + ": " + cause.Error()
	if o.restartOf != "" {
		msg = ReasonRunnerLost + ": owner " + o.restartOf + " lost and no capacity to restart: " + msg
		conds = conds.set(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: ReasonRunnerLost, Message: msg}, time.Now())
		r.fail(ctx, log, id, conds, ReasonRunnerLost)
		return nil
	}
	r.addWaiting(id)
	if c, ok := conds.get(CondRunnerStarted); !ok || c.Status != StatusFalse || c.Reason != reason {
		conds = conds.set(Condition{Type: CondRunnerStarted, Status: StatusFalse, Reason: reason, Message: msg + "; starts when capacity frees up"}, time.Now())
		if err := r.writeStatus(ctx, id, statusUpdate{Conditions: conds}); err != nil {
			log.Warn("write capacity condition", slog.String(logkey.Err, err.Error()))
		}
	}
	log.Info("session deferred for capacity", slog.String(logkey.Reason, reason))
	return nil
}

// fail writes phase Failed with a completion time and counts the reason.
func (r *Reconciler) fail(ctx context.Context, log *slog.Logger, id string, conds conditions, reason string) {
	r.metrics.failure(ctx, reason)
	log.Info("session failed", slog.String(logkey.Reason, reason))
	if err := r.writeStatus(ctx, id, statusUpdate{Phase: PhaseFailed, CompletionTime: time.Now(), Conditions: conds}); err != nil {
		log.Error("write phase", slog.String(logkey.Phase, PhaseFailed), slog.String(logkey.Err, err.Error()))
	}
}

// release drops this replica's claim. Losing the claim to another owner
// meanwhile is fine: the record is theirs then.
func (r *Reconciler) release(ctx context.Context, log *slog.Logger, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := registry.Release(ctx, r.kv, id, r.cfg.Member); err != nil && !errors.Is(err, registry.ErrNotOwner) {
		log.Warn("release claim", slog.String(logkey.Err, err.Error()))
	}
}

// updateRecord rewrites this replica's registry record of rn with
// compare-and-swap. A stop request written meanwhile by another replica
// (state "stopping") is kept and forwarded to the supervisor; a record taken
// over by another owner marks the run lost.
func (r *Reconciler) updateRecord(ctx context.Context, rn *run, mutate func(*registry.Endpoint)) error {
	rn.mu.Lock()
	cur, rev := rn.ep, rn.rev
	rn.mu.Unlock()
	if rev == 0 {
		rec, err := registry.Get(ctx, r.kv, rn.id)
		if err != nil {
			return fmt.Errorf("read claim: %w", err)
		}
		cur, rev = rec.Endpoint, rec.Revision
	}
	for range 5 {
		if cur.Owner != r.cfg.Member {
			rn.markLost()
			return fmt.Errorf("claim of %s taken over by %s", rn.id, cur.Owner)
		}
		next := cur
		mutate(&next)
		stopping := cur.State == registry.StateStopping
		if stopping {
			next.State = registry.StateStopping
		}
		n, err := registry.Register(ctx, r.kv, next, rev)
		if err == nil {
			rn.mu.Lock()
			rn.ep, rn.rev = next, n
			rn.mu.Unlock()
			if stopping {
				rn.requestStop(false)
			}
			return nil
		}
		if !errors.Is(err, registry.ErrConflict) {
			return err
		}
		rec, err := registry.Get(ctx, r.kv, rn.id)
		if errors.Is(err, registry.ErrNotFound) {
			rn.markLost()
			return fmt.Errorf("claim of %s vanished", rn.id)
		}
		if err != nil {
			return err
		}
		cur, rev = rec.Endpoint, rec.Revision
	}
	return fmt.Errorf("register %s: %w", rn.id, registry.ErrConflict)
}

// sessionOf maps a session to what its runner is told.
func sessionOf(s *ambientv1.Session) runner.Session {
	return runner.Session{
		ID: s.GetMetadata().GetId(), Name: s.GetName(), ProjectID: s.GetProjectId(),
		Prompt: s.Prompt, LLMModel: s.LlmModel, LLMTemperature: s.LlmTemperature, LLMMaxTokens: s.LlmMaxTokens,
		Timeout: s.Timeout, ReposJSON: s.Repos,
	}
}

func (r *Reconciler) isWaiting(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.waiting[id]
	return ok
}

func (r *Reconciler) addWaiting(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiting[id]; !ok {
		r.waiting[id] = time.Now()
	}
}

func (r *Reconciler) clearWaiting(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.waiting, id)
}

// startWaiting retries deferred sessions, oldest first, while capacity lasts.
func (r *Reconciler) startWaiting(ctx context.Context) {
	type entry struct {
		id    string
		since time.Time
	}
	r.mu.Lock()
	waiting := make([]entry, 0, len(r.waiting))
	for id, t := range r.waiting {
		waiting = append(waiting, entry{id, t})
	}
	r.mu.Unlock()
	slices.SortFunc(waiting, func(a, b entry) int { return a.since.Compare(b.since) })
	for _, w := range waiting {
		if ctx.Err() != nil || !r.mgr.HasCapacity() {
			return
		}
		log := r.log.With(slog.String(logkey.SessionID, w.id))
		unlock := r.locks.lock(w.id)
		r.clearWaiting(w.id)
		// attempt 2: past the duplicate check, not the last try.
		err := r.ensureRunning(ctx, log, w.id, 2, time.Now())
		unlock()
		if err != nil {
			log.Warn("start deferred session", slog.String(logkey.Err, err.Error()))
		}
	}
}
