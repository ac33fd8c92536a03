package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// The condition this service writes on a session (or project) it cannot
// reconcile: Reconciled=False with a reason.
const (
	ConditionReconciled = "Reconciled"
	ReasonInvalidSpec   = "InvalidSpec"
)

// reconciledFalse is the one condition of a session or project this
// service could not reconcile. It has no timestamp on purpose: the same
// failure must produce the same bytes, so its echo compares equal and
// causes no further write.
func reconciledFalse(reason, message string) session.Conditions {
	return session.Conditions{{Type: ConditionReconciled, Status: session.StatusFalse, Reason: reason, Message: message}}
}

// session applies the AgenticSession of s, or deletes it when s is deleted.
func (r *Reconciler) session(ctx context.Context, s *ambientv1.Session, deleted bool, log *slog.Logger) (string, error) {
	id := s.GetMetadata().GetId()
	log = log.With(slog.String(logkey.SessionID, id), slog.String(logkey.ProjectID, s.GetProjectId()))
	if deleted {
		// Deleted sessions lose their CR whatever the selector says now: it may
		// have selected the session when the CR was made.
		if err := r.deleteCRs(ctx, s, id, types.NamespacedName{}); err != nil {
			return metrics.ResultError, err
		}
		if r.cfg.Tracker != nil {
			r.cfg.Tracker.Forget(id)
		}
		return metrics.ResultOK, nil
	}
	if !r.cfg.Selector.Selects(s) {
		log.DebugContext(ctx, "session not run on kubernetes")
		return metrics.ResultSkipped, nil
	}
	ns, err := r.projectNamespace(s.GetProjectId())
	var desired *spec.AgenticSession
	if err == nil {
		desired, err = spec.Session(s, ns)
	}
	if err != nil {
		return r.invalidSession(ctx, s, err, log)
	}
	r.withInstance(desired.Labels)
	key := types.NamespacedName{Namespace: desired.Namespace, Name: desired.Name}
	if r.cfg.Tracker != nil {
		// Before the apply, so the status informer's first look at a new CR
		// already knows the session.
		r.cfg.Tracker.Observe(s, key)
	}
	err = r.ensureNamespace(ctx, ns, s.GetProjectId())
	var refused *RefusedError
	if errors.As(err, &refused) {
		return r.refusedSession(ctx, s, refused, log)
	}
	if err != nil {
		return metrics.ResultError, err
	}
	if r.unchanged(desired, key) {
		return metrics.ResultUnchanged, nil
	}
	if _, err := r.cfg.Applier.Session(ctx, desired); err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err) {
			return r.invalidSession(ctx, s, &spec.FieldError{Field: "spec", Reason: string(apierrors.ReasonForError(err)) + ": " + err.Error()}, log)
		}
		r.forgetOnNotFound(ns, err)
		return metrics.ResultError, err
	}
	// A CR left under another name or namespace (kube_cr_name or the project
	// changed) is no longer wanted.
	if err := r.deleteCRs(ctx, nil, id, key); err != nil {
		return metrics.ResultError, err
	}
	return metrics.ResultOK, nil
}

// unchanged reports whether the cached CR key already holds desired
// (apply.Applier.UpToDate), so applying it again would change nothing. The
// echo of our own status write-back, and every resync of an unchanged
// session, then costs no Kubernetes call; an edit of one of our fields by
// someone else makes it false, so the next event or resync undoes it.
func (r *Reconciler) unchanged(desired *spec.AgenticSession, key types.NamespacedName) bool {
	if r.cfg.Tracker == nil {
		return false
	}
	cur, ok := r.cfg.Tracker.CachedCR(key)
	return ok && r.cfg.Applier.UpToDate(cur, desired)
}

// deleteCRs deletes the CRs of session id except keep: the one computed from
// s (when s is given and valid) and those the status informer indexed for id.
func (r *Reconciler) deleteCRs(ctx context.Context, s *ambientv1.Session, id string, keep types.NamespacedName) error {
	var targets []types.NamespacedName
	if s != nil {
		if ns, err := r.projectNamespace(s.GetProjectId()); err == nil {
			if name, err := spec.CRName(s); err == nil {
				targets = append(targets, types.NamespacedName{Namespace: ns, Name: name})
			}
		}
	}
	targets = append(targets, r.trackedCRs(id)...)
	return r.deleteAll(ctx, targets, keep)
}

func (r *Reconciler) deleteAll(ctx context.Context, targets []types.NamespacedName, keep types.NamespacedName) error {
	seen := map[types.NamespacedName]bool{keep: true}
	for _, t := range targets {
		if seen[t] {
			continue
		}
		seen[t] = true
		if err := r.cfg.Applier.DeleteSession(ctx, t.Namespace, t.Name); err != nil {
			return err
		}
	}
	return nil
}

// invalidSession reports a session that can never get a CR: phase Failed with
// a Reconciled=False condition naming the field. Any CR it had is deleted so
// its status cannot overwrite the failure. The event is then acked.
func (r *Reconciler) invalidSession(ctx context.Context, s *ambientv1.Session, cause error, log *slog.Logger) (string, error) {
	r.cfg.Metrics.Reject(ctx, "sessions", "invalid_field")
	log.WarnContext(ctx, "session refused", slog.String(logkey.Reason, cause.Error()))
	if err := r.deleteAll(ctx, r.trackedCRs(s.GetMetadata().GetId()), types.NamespacedName{}); err != nil {
		return metrics.ResultError, err
	}
	return r.reportFailed(ctx, s, ReasonInvalidSpec, cause.Error())
}

// refusedSession reports a session whose project's namespace is refused
// (denied, or not the project's): no AgenticSession, phase Failed with a
// Reconciled=False condition saying why. Unlike invalidSession it deletes
// nothing, because nothing may be written in a refused namespace. Once an
// operator fixes the namespace, a start of the session (or the next resync)
// reconciles it again.
func (r *Reconciler) refusedSession(ctx context.Context, s *ambientv1.Session, refused *RefusedError, log *slog.Logger) (string, error) {
	r.cfg.Metrics.Reject(ctx, "sessions", refused.metricReason())
	log.ErrorContext(ctx, "session refused: project namespace not ours", slog.String(logkey.Namespace, refused.Namespace),
		slog.String(logkey.Reason, refused.Detail))
	return r.reportFailed(ctx, s, refused.Reason, refused.Detail)
}

// reportFailed writes phase Failed and one Reconciled=False condition with
// reason and message, unless the session already says exactly that (the
// echo of our own write).
func (r *Reconciler) reportFailed(ctx context.Context, s *ambientv1.Session, reason, message string) (string, error) {
	id := s.GetMetadata().GetId()
	conds := reconciledFalse(reason, message).JSON()
	if session.PhaseOf(s) == session.PhaseFailed && jsonEqual(s.GetConditions(), conds) {
		return metrics.ResultInvalid, nil
	}
	updated, err := r.cfg.API.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: session.PhaseFailed.Ptr(), Conditions: &conds})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return metrics.ResultInvalid, nil // deleted meanwhile: nothing left to report on
	default:
		return metrics.ResultError, fmt.Errorf("report session %s: %w", id, err)
	}
	if r.cfg.Tracker != nil {
		r.cfg.Tracker.Observe(updated, types.NamespacedName{})
	}
	return metrics.ResultInvalid, nil
}

func (r *Reconciler) trackedCRs(id string) []types.NamespacedName {
	if r.cfg.Tracker == nil {
		return nil
	}
	return r.cfg.Tracker.CRsOf(id)
}

// jsonEqual compares two JSON documents by value; invalid JSON is never equal.
func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	ax, _ := json.Marshal(x) // re-encoding sorts object keys
	by, _ := json.Marshal(y)
	return string(ax) == string(by)
}
