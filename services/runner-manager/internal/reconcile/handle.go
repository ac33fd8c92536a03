package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// ErrShuttingDown is returned by Handle while the reconciler stops: the
// event is retried later (by whichever replica then owns it).
var ErrShuttingDown = supervise.ErrShuttingDown

// Handle is the group.Handler: it reconciles the session of one event. nil
// means done (ack); an error means retry (NakWithDelay). Bad input never
// returns an error: it is reported on the session. A session without
// capacity is acked and queued (deferForCapacity).
func (r *Reconciler) Handle(ctx context.Context, m group.Message) error {
	ev := m.Event
	if ev.GetResource() != eventsv1.Resource_RESOURCE_SESSIONS {
		return nil
	}
	received := time.Now()
	id := ev.GetObjectId()
	s := ev.GetObject().GetSession()
	if s == nil {
		s = ev.GetOldObject().GetSession()
	}
	ctx, span := r.tracer.Start(ctx, "reconcile session", trace.WithAttributes(
		attribute.String(logkey.SessionID, id), attribute.String(logkey.EventType, ev.GetType().String()),
		attribute.String(logkey.Phase, s.GetPhase())))
	defer span.End()
	log := r.log.With(slog.String(logkey.SessionID, id), slog.String(logkey.EventType, ev.GetType().String()),
		slog.String(logkey.Phase, s.GetPhase()), slog.Uint64(logkey.Attempt, m.Attempt))
	lk := r.lock(id)
	defer lk.release()

	seenAt := s.GetMetadata().GetUpdatedAt().AsTime()
	if s.GetMetadata().GetUpdatedAt() == nil {
		seenAt = time.Time{}
	}
	var err error
	rn := r.sup.Get(id)
	switch phase := session.PhaseOf(s); {
	case ev.GetType() == eventsv1.EventType_EVENT_TYPE_DELETED:
		// Whatever the selector says now: if a runner exists, it goes.
		err = r.stopSession(ctx, log, id, true, nil)
	case s == nil:
		log.Warn("event without a session object")
	case !r.cfg.Selector.Selects(s):
		err = r.deselect(ctx, log, id, phase)
	case phase.WantsRunner() && movedAway(rn, s):
		// Moved to another project while its runner runs here (move.go).
		err = r.move(ctx, log, rn)
	case phase == session.PhaseNone, phase == session.PhasePending:
		// A waiting session that moved project waits as its new project's.
		r.queue.SetProject(id, s.GetProjectId())
		err = r.ensureRunning(ctx, log, lk, id, received)
	case phase == session.PhaseStopping:
		err = r.stopSession(ctx, log, id, false, s)
	case phase == session.PhaseCreating, phase == session.PhaseRunning:
		err = r.checkAlive(ctx, log, id, phase, seenAt)
		if rn := r.sup.Get(id); err == nil && phase == session.PhaseRunning && rn != nil {
			// Spec changes of a running session reach its runner (repos.go).
			err = r.reconcileRepos(ctx, log, rn, s, true)
		}
	default:
		// Terminal phases (and unknown ones) never start anything; the echo
		// of our own final writes lands here. A terminal phase written over
		// a live runner here ends that runner (heal.go).
		if rn != nil {
			err = r.healPhase(ctx, log, rn, phase, seenAt)
		}
	}
	// What a runner no longer here had of its repos is of no use.
	r.repos.forget(id, r.sup.Get(id))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// deselect handles a session this deployment does not run. A runner still
// running it here (its labels changed, moving it to another executor) is
// stopped, because two executors must never run one session; no phase is
// written for it, the new executor owns the status now. A Stopping session
// is the exception: its stop was asked for, so it ends as Stopped.
func (r *Reconciler) deselect(ctx context.Context, log *slog.Logger, id string, phase session.Phase) error {
	r.queue.Remove(id)
	rn := r.sup.Get(id)
	if rn == nil {
		log.Debug("session not selected for local execution")
		return nil
	}
	if phase == session.PhaseStopping {
		return r.stopSession(ctx, log, id, false, nil)
	}
	log.Info("session no longer selected for local execution: stopping its runner")
	rn.RequestStop(ctx, true) // like a deletion: no phase write
	return nil
}

// wrapRetry adds the operation to a retryable error.
func wrapRetry(op, id string, err error) error {
	return fmt.Errorf("%s %s: %w", op, id, err)
}
