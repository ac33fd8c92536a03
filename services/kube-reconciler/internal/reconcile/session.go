package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// The condition this service writes on a session (or project) it cannot
// reconcile: Reconciled=False with a reason.
const (
	ConditionReconciled = "Reconciled"
	ReasonInvalidSpec   = "InvalidSpec"
	// ReasonForbidden: the kube-apiserver refused the AgenticSession's
	// apply with 403 Forbidden (forbiddenSession).
	ReasonForbidden = "Forbidden"
	// ReasonApplied is the reason of Reconciled=True, written only to
	// replace a Reconciled=False of ours once the session reconciled.
	ReasonApplied = "Applied"
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
	cur, ok := r.upToDate(desired, key)
	result := metrics.ResultUnchanged
	if !ok {
		if cur, err = r.cfg.Applier.Session(ctx, desired); err != nil {
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err) {
				return r.invalidSession(ctx, s, &spec.FieldError{Field: "spec", Reason: string(apierrors.ReasonForError(err)) + ": " + err.Error()}, log)
			}
			if apierrors.IsForbidden(err) {
				return r.forbiddenSession(ctx, s, err, log)
			}
			r.forgetOnNotFound(ns, err)
			return metrics.ResultError, err
		}
		result = metrics.ResultOK
	}
	// A CR left under another name or namespace (kube_cr_name or the project
	// changed) is no longer wanted. Also when the new CR is up to date: its
	// delete may have failed, or the status informer had not synced when
	// the new one was applied, and every retry and resync finds the new CR
	// up to date. Only the informer's index is read when there is none.
	if err := r.deleteCRs(ctx, nil, id, key); err != nil {
		return metrics.ResultError, err
	}
	return r.clearFailure(ctx, s, key, cur, result)
}

// upToDate returns the cached CR key when it already holds desired
// (apply.Applier.UpToDate), so applying it again would change nothing. The
// echo of our own status write-back, and every resync of an unchanged
// session, then costs no Kubernetes call; an edit of one of our fields by
// someone else makes it false, so the next event or resync undoes it.
func (r *Reconciler) upToDate(desired *spec.AgenticSession, key types.NamespacedName) (*unstructured.Unstructured, bool) {
	if r.cfg.Tracker == nil {
		return nil, false
	}
	cur, ok := r.cfg.Tracker.CachedCR(key)
	if !ok || !r.cfg.Applier.UpToDate(cur, desired) {
		return nil, false
	}
	return cur, true
}

// clearFailure undoes what reportFailed wrote once the session reconciled
// (its CR cr applied or up to date): nothing else clears it, so a fixed
// session kept showing Failed and Reconciled=False. The condition becomes
// Reconciled=True (reason ReasonApplied, no time: its echo compares equal),
// and the phase Pending when it is still Failed and the CR has no phase of
// its own (a Failed from the operator comes with a CR phase and is kept).
// Sessions without our Reconciled=False cost nothing. It returns result
// unless the write fails.
func (r *Reconciler) clearFailure(ctx context.Context, s *ambientv1.Session, key types.NamespacedName, cr *unstructured.Unstructured, result string) (string, error) {
	conds, err := session.ParseConditions(s.GetConditions())
	if err != nil {
		return result, nil // not ours: we write valid JSON
	}
	i := slices.IndexFunc(conds, reportedFailure)
	if i < 0 {
		return result, nil
	}
	conds = slices.Clone(conds)
	conds[i] = session.Condition{Type: ConditionReconciled, Status: session.StatusTrue, Reason: ReasonApplied}
	js := conds.JSON()
	req := &ambientv1.UpdateSessionStatusRequest{Id: s.GetMetadata().GetId(), Conditions: &js}
	if session.PhaseOf(s) == session.PhaseFailed && phaseOf(cr) == session.PhaseNone {
		req.Phase = session.PhasePending.Ptr()
	}
	updated, err := r.cfg.API.UpdateSessionStatus(ctx, req)
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return result, nil // deleted meanwhile
	default:
		return metrics.ResultError, fmt.Errorf("clear reported failure of session %s: %w", req.GetId(), err)
	}
	if r.cfg.Tracker != nil {
		r.cfg.Tracker.Observe(updated, key)
	}
	return result, nil
}

// phaseOf is the phase in cr's status (PhaseNone for none or no cr).
func phaseOf(cr *unstructured.Unstructured) session.Phase {
	if cr == nil {
		return session.PhaseNone
	}
	p, _, _ := unstructured.NestedString(cr.Object, "status", "phase")
	return session.Phase(p)
}

// reportedFailure reports whether c is a Reconciled=False this service
// wrote (reportFailed).
func reportedFailure(c session.Condition) bool {
	return c.Type == ConditionReconciled && c.Status == session.StatusFalse &&
		(c.Reason == ReasonInvalidSpec || c.Reason == ReasonNamespaceDenied || c.Reason == ReasonNamespaceNotOwned ||
			c.Reason == ReasonReconcileFailed || c.Reason == ReasonForbidden)
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
	r.cfg.Metrics.Reject(ctx, "sessions", metrics.RejectInvalidField)
	log.WarnContext(ctx, "session refused", slog.String(logkey.Reason, cause.Error()))
	if err := r.deleteAll(ctx, r.trackedCRs(s.GetMetadata().GetId()), types.NamespacedName{}); err != nil {
		return metrics.ResultError, err
	}
	return r.reportFailed(ctx, s, ReasonInvalidSpec, cause.Error())
}

// refusedSession reports a session whose project's namespace is refused
// (denied, or not the project's): no AgenticSession, phase Failed with a
// Reconciled=False condition saying why. Nothing is written in the refused
// namespace, but a CR the session left in another namespace (it moved here
// from a project of ours) is deleted as invalidSession does: its status
// would otherwise write its phase over the failure, and its agent would
// keep running. Once an operator fixes the namespace, a start of the
// session (or the next resync) reconciles it again.
func (r *Reconciler) refusedSession(ctx context.Context, s *ambientv1.Session, refused *RefusedError, log *slog.Logger) (string, error) {
	r.cfg.Metrics.Reject(ctx, "sessions", refused.metricReason())
	log.ErrorContext(ctx, "session refused: project namespace not ours", slog.String(logkey.Namespace, refused.Namespace),
		slog.String(logkey.Reason, refused.Detail))
	var elsewhere []types.NamespacedName
	for _, cr := range r.trackedCRs(s.GetMetadata().GetId()) {
		if cr.Namespace != refused.Namespace {
			elsewhere = append(elsewhere, cr)
		}
	}
	if err := r.deleteAll(ctx, elsewhere, types.NamespacedName{}); err != nil {
		return metrics.ResultError, err
	}
	return r.reportFailed(ctx, s, refused.Reason, refused.Detail)
}

// forbiddenSession handles an apply the kube-apiserver refused with 403
// Forbidden: the namespace's ResourceQuota is used up, the namespace is
// terminating, an admission webhook denied it, or this service lacks a
// permission. None of these is likely to pass during the event's retries,
// and each retry held one of the member's in-flight slots through its
// backoff, so one tenant over quota stalled other tenants' sessions on the
// member for minutes. The event is acked instead and, as for bad input, a
// session without a CR reports it at once: phase Failed, Reconciled=False
// Forbidden with Kubernetes' message. Nothing is deleted: the refusal may end
// (the quota raised), and the resync applies the session again at each pass
// once HandledFor has passed; its first success clears the report
// (clearFailure). A session that has a CR is only logged and counted: its
// status is the operator's, which the write-back would put over the report
// (as ReportDeadLetter leaves it alone for the same reason).
func (r *Reconciler) forbiddenSession(ctx context.Context, s *ambientv1.Session, cause error, log *slog.Logger) (string, error) {
	r.cfg.Metrics.Reject(ctx, "sessions", metrics.RejectForbidden)
	log.WarnContext(ctx, "session refused by kubernetes: forbidden, left to the resync", slog.String(logkey.Reason, cause.Error()))
	if len(r.trackedCRs(s.GetMetadata().GetId())) > 0 {
		return metrics.ResultInvalid, nil
	}
	return r.reportFailed(ctx, s, ReasonForbidden, failureMessage(ReasonForbidden+": "+cause.Error()))
}

// reportFailed writes phase Failed and one Reconciled=False condition with
// reason and message, unless the session already says exactly that (the
// echo of our own write). The informer's EventsPublished is kept: the API
// replaces the whole list, and the informer would put it back, which is a
// write of its own for each of ours.
func (r *Reconciler) reportFailed(ctx context.Context, s *ambientv1.Session, reason, message string) (string, error) {
	id := s.GetMetadata().GetId()
	conds := failedConditions(s.GetConditions(), reason, message)
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

// failedConditions is the conditions list reportFailed writes over cur
// (the session's): Reconciled=False with reason and message, then cur's
// EventsPublished (the informer's, kept as written; the informer appends
// it, so this order is the one it leaves). The rest of cur is dropped:
// it described a CR the failed session no longer has. The same cur and
// failure give the same bytes, so the echo compares equal.
func failedConditions(cur, reason, message string) string {
	var kept []json.RawMessage
	var list []json.RawMessage
	if json.Unmarshal([]byte(cur), &list) == nil {
		for _, raw := range list {
			var c session.RawCondition
			if json.Unmarshal(raw, &c) == nil && c.Type == session.ConditionEventsPublished {
				kept = append(kept, raw)
			}
		}
	}
	if len(kept) == 0 {
		return reconciledFalse(reason, message).JSON()
	}
	ours, err := json.Marshal(reconciledFalse(reason, message)[0])
	if err != nil {
		return reconciledFalse(reason, message).JSON() // plain strings always marshal
	}
	b, err := json.Marshal(append([]json.RawMessage{ours}, kept...))
	if err != nil {
		return reconciledFalse(reason, message).JSON() // entries read from JSON always encode
	}
	return string(b)
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
