package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// ErrShuttingDown is returned by Handle while the reconciler stops: the event
// is retried later (by whichever replica then owns it).
var ErrShuttingDown = errors.New("runner-manager shutting down")

// Handle reconciles one event. nil means done (ack); an error means retry
// (NakWithDelay). Bad input never returns an error: it is reported on the
// session. A session without capacity is acked and queued (see
// deferForCapacity).
func (r *Reconciler) Handle(ctx context.Context, ev *eventsv1.ResourceEvent, attempt uint64) error {
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
		slog.String(logkey.Phase, s.GetPhase()), slog.Uint64(logkey.Attempt, attempt))
	unlock := r.locks.lock(id)
	defer unlock()

	err := r.handle(ctx, log, ev.GetType(), id, s, attempt, received)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

func (r *Reconciler) handle(ctx context.Context, log *slog.Logger, typ eventsv1.EventType, id string, s *ambientv1.Session, attempt uint64, received time.Time) error {
	if typ == eventsv1.EventType_EVENT_TYPE_DELETED {
		// Whatever the selector says now: if a runner exists, it goes.
		return r.stopSession(ctx, log, id, true)
	}
	if s == nil {
		log.Warn("event without a session object")
		return nil
	}
	if !r.cfg.Selector.Match(s) {
		return r.deselect(ctx, log, id, s.GetPhase())
	}
	switch phase := s.GetPhase(); phase {
	case "", PhasePending:
		return r.ensureRunning(ctx, log, id, attempt, received)
	case PhaseStopping:
		return r.stopSession(ctx, log, id, false)
	case PhaseCreating, PhaseRunning:
		return r.checkAlive(ctx, log, id, phase)
	default:
		// Terminal phases (and unknown ones) never start anything; the echo
		// of our own final writes lands here. A terminal phase written over
		// a live runner here ends that runner (heal.go).
		if rn := r.localRun(id); rn != nil {
			return r.healPhase(ctx, log, rn, phase)
		}
		return nil
	}
}

// deselect handles a session this deployment does not run. A runner still
// running it here (its labels changed, moving it to another executor) is
// stopped, because two executors must never run one session; no phase is
// written for it, the new executor owns the status now. A Stopping session
// is the exception: its stop was asked for, so it ends as Stopped.
func (r *Reconciler) deselect(ctx context.Context, log *slog.Logger, id, phase string) error {
	r.clearWaiting(id)
	rn := r.localRun(id)
	if rn == nil {
		log.Debug("session not selected for local execution")
		return nil
	}
	if phase == PhaseStopping {
		return r.stopSession(ctx, log, id, false)
	}
	log.Info("session no longer selected for local execution: stopping its runner")
	rn.requestStop(true) // like a deletion: no phase write
	return nil
}

// wrapRetry adds the operation to a retryable error.
func wrapRetry(op, id string, err error) error {
	return fmt.Errorf("%s %s: %w", op, id, err)
}
