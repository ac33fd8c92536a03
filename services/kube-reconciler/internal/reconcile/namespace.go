package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Reasons a project's namespace is refused, as written on the project's
// status and on its sessions' Reconciled condition.
const (
	// ReasonNamespaceDenied: the namespace matches NAMESPACE_DENY_LIST.
	ReasonNamespaceDenied = "NamespaceDenied"
	// ReasonNamespaceNotOwned: the namespace exists without this project's
	// ownership labels.
	ReasonNamespaceNotOwned = "NamespaceNotOwned"
)

// RefusedError says why a project's namespace is not the control plane's to
// write. Nothing is written to a refused namespace: no labels, RoleBindings,
// prunes or AgenticSessions.
type RefusedError struct {
	Namespace string
	ProjectID string
	Reason    string // ReasonNamespaceDenied or ReasonNamespaceNotOwned
	Detail    string
}

// Error implements error.
func (e *RefusedError) Error() string { return e.Detail }

// metricReason is the "reason" label of the rejected_total metric.
func (e *RefusedError) metricReason() string {
	if e.Reason == ReasonNamespaceDenied {
		return metrics.RejectNamespaceDenied
	}
	return metrics.RejectNamespaceNotOwned
}

// project makes the project's Namespace exist, or reports on the project why
// it cannot. A deleted project keeps its namespace (and everything in it):
// deleting user workloads is not this service's call.
func (r *Reconciler) project(ctx context.Context, p *ambientv1.Project, deleted bool, log *slog.Logger) (string, error) {
	if deleted {
		log.DebugContext(ctx, "project deleted, namespace kept")
		return metrics.ResultOK, nil
	}
	id := p.GetMetadata().GetId()
	log = log.With(slog.String(logkey.ProjectID, id))
	ns, err := spec.ProjectNamespace(id)
	if err != nil {
		r.cfg.Metrics.Reject(ctx, "projects", metrics.RejectInvalidName)
		log.WarnContext(ctx, "project cannot have a namespace", slog.String(logkey.Reason, err.Error()))
		return metrics.ResultInvalid, nil
	}
	// A project's own event always looks at its namespace: the labels are
	// re-asserted (and a namespace deleted behind our back is made again)
	// now, not at the next resync pass. Project events are rare; the
	// sessions and settings of the project keep using the remembered check.
	err = r.refreshNamespace(ctx, ns.Name, id)
	var refused *RefusedError
	if errors.As(err, &refused) {
		r.cfg.Metrics.Reject(ctx, "projects", refused.metricReason())
		log.ErrorContext(ctx, "project namespace refused", slog.String(logkey.Namespace, ns.Name), slog.String(logkey.Reason, refused.Detail))
		if err := r.setProjectStatus(ctx, p, refused); err != nil {
			return metrics.ResultError, err
		}
		return metrics.ResultInvalid, nil
	}
	if err != nil {
		return metrics.ResultError, err
	}
	if err := r.setProjectStatus(ctx, p, nil); err != nil {
		return metrics.ResultError, err
	}
	return metrics.ResultOK, nil
}

// setProjectStatus writes the refusal on the project's status (a JSON list
// holding one Reconciled=False condition, the shape of a session's
// conditions), or clears a refusal written before once the namespace is
// accepted. A status someone else wrote is never overwritten by a clear; a
// refusal overwrites it, because the project cannot work until an operator
// acts. The write is skipped when the status already says exactly that, so
// the echo of our own write causes nothing.
func (r *Reconciler) setProjectStatus(ctx context.Context, p *ambientv1.Project, refused *RefusedError) error {
	want := ""
	if refused != nil {
		want = reconciledFalse(refused.Reason, refused.Detail).JSON()
	}
	cur := p.GetStatus()
	switch {
	case refused != nil && jsonEqual(cur, want):
		return nil
	case refused == nil && !refusalStatus(cur):
		return nil
	}
	id := p.GetMetadata().GetId()
	_, err := r.cfg.API.UpdateProject(ctx, &ambientv1.UpdateProjectRequest{Id: id, Status: &want})
	if status.Code(err) == codes.NotFound {
		return nil // deleted meanwhile: nothing left to report on
	}
	if err != nil {
		return fmt.Errorf("report project %s status: %w", id, err)
	}
	return nil
}

// refusalStatus reports whether a project status is a refusal this service
// wrote (see setProjectStatus).
func refusalStatus(s string) bool {
	conds, err := session.ParseConditions(s)
	if err != nil || len(conds) != 1 {
		return false
	}
	c := conds[0]
	return c.Type == ConditionReconciled && (c.Reason == ReasonNamespaceDenied || c.Reason == ReasonNamespaceNotOwned)
}

// withInstance adds this installation's label to the labels of an
// AgenticSession, RoleBinding or namespace (a namespace without it, written
// before namespaces carried it, is still adopted: spec.NamespaceOwnedBy).
func (r *Reconciler) withInstance(l map[string]string) {
	if r.cfg.Owner.Instance != "" && l != nil {
		l[spec.LabelInstance] = r.cfg.Owner.Instance
	}
}

// projectNamespace returns the namespace of project id: its id lower-cased
// (spec.ProjectNamespace), never its name, which can change. Sessions
// without a project go to DefaultNamespace.
func (r *Reconciler) projectNamespace(projectID string) (string, error) {
	return spec.SessionNamespace(projectID, r.cfg.DefaultNamespace)
}

// denied returns a *RefusedError when ns is on the deny-list. The default
// namespace (sessions without a project) is always denied to projects: it
// is the deployment's, and labelling it for one project would hand that
// project everything else in it.
func (r *Reconciler) denied(ns, projectID string) error {
	if ns == r.cfg.DefaultNamespace {
		return &RefusedError{Namespace: ns, ProjectID: projectID, Reason: ReasonNamespaceDenied,
			Detail: fmt.Sprintf("namespace %q is the control plane's default namespace (NAMESPACE)", ns)}
	}
	if p, ok := r.cfg.NamespaceDenyList.Match(ns); ok {
		return &RefusedError{Namespace: ns, ProjectID: projectID, Reason: ReasonNamespaceDenied,
			Detail: fmt.Sprintf("namespace %q matches %q of the namespace deny-list (NAMESPACE_DENY_LIST)", ns, p)}
	}
	return nil
}

// refusal turns the applier's *apply.NotOwnedError into a *RefusedError.
func refusal(err error) error {
	var no *apply.NotOwnedError
	if errors.As(err, &no) {
		return &RefusedError{Namespace: no.Namespace, ProjectID: no.ProjectID, Reason: ReasonNamespaceNotOwned, Detail: no.Error()}
	}
	return err
}

// ensureNamespace makes the namespace of a project exist before objects go
// into it (a session or settings event may arrive before the project's), or
// returns a *RefusedError when it is denied or not the project's. The check
// is done once per process and namespace, until a write into it failed with
// NotFound, the project's own event comes (refreshNamespace) or a resync
// pass starts.
//
// Callers that find the namespace unchecked while another caller checks it
// wait for that check and take its result instead of making their own: the
// first burst of a new project's sessions (as many as the consumer has in
// flight, 64 by default) otherwise each read the namespace, each tried to
// create it and each read it again on AlreadyExists, about 180 requests to
// the kube-apiserver where one read and one create do.
func (r *Reconciler) ensureNamespace(ctx context.Context, ns, projectID string) error {
	if ns == r.cfg.DefaultNamespace && projectID == "" {
		// The default namespace is the deployment's, not a project's: never
		// label it as managed.
		return nil
	}
	if err := r.denied(ns, projectID); err != nil {
		return err
	}
	for !r.isEnsured(ns, projectID) {
		// The key is the namespace and the project as given: ids differing
		// only in case check apart (isEnsured then serves both).
		check := r.namespaceChecks.DoChan(ns+"\x00"+projectID, func() (any, error) {
			return nil, r.lookAtNamespace(ctx, ns, projectID)
		})
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the check of namespace %s: %w", ns, ctx.Err())
		case res := <-check:
			if !cancelled(res.Err) || ctx.Err() != nil {
				return res.Err
			}
		}
		// The check ended because the context of the caller that ran it
		// did, not this one's: check again (or wait for whoever checks now).
	}
	return nil
}

// cancelled reports whether err is a context's end.
func cancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// refreshNamespace is ensureNamespace for the project's own event: it looks
// at the namespace now, whatever was checked before or is being checked, so
// the labels are re-asserted (and a namespace deleted behind our back is
// made again) at once, not at the next resync pass.
func (r *Reconciler) refreshNamespace(ctx context.Context, ns, projectID string) error {
	if err := r.denied(ns, projectID); err != nil {
		return err
	}
	r.forget(ns)
	return r.lookAtNamespace(ctx, ns, projectID)
}

// lookAtNamespace makes the project's namespace exist with its labels
// (apply.Applier.Namespace) and remembers it as checked, or returns why it
// cannot (a *RefusedError when it is not the project's).
func (r *Reconciler) lookAtNamespace(ctx context.Context, ns, projectID string) error {
	labels, err := spec.ProjectLabels(projectID, "project_id")
	if err != nil {
		return err
	}
	r.withInstance(labels)
	if err := r.cfg.Applier.Namespace(ctx, spec.Namespace{Name: ns, Labels: labels}); err != nil {
		return refusal(err)
	}
	r.markEnsured(ns, projectID)
	return nil
}

// checkNamespace is ensureNamespace without the create: it reports whether
// the project's namespace exists, or a *RefusedError when it is denied or
// not the project's. Used before pruning, which must neither create a
// namespace nor touch one that is not ours.
func (r *Reconciler) checkNamespace(ctx context.Context, ns, projectID string) (bool, error) {
	if err := r.denied(ns, projectID); err != nil {
		return false, err
	}
	if r.isEnsured(ns, projectID) {
		return true, nil
	}
	exists, err := r.cfg.Applier.CheckNamespace(ctx, ns, projectID, r.cfg.Owner.Instance)
	if err != nil {
		return exists, refusal(err)
	}
	if exists {
		r.markEnsured(ns, projectID)
	}
	return exists, nil
}

// isEnsured reports whether ns was checked for the project (by its
// kubelabel.ProjectKey, as markEnsured remembers it).
func (r *Reconciler) isEnsured(ns, projectID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ensured[ns] == kubelabel.ProjectKey(projectID)
}

// markEnsured remembers ns as checked for the project: by its
// kubelabel.ProjectKey, so ids differing only in case (one namespace, one
// owner) share the entry.
func (r *Reconciler) markEnsured(ns, projectID string) {
	r.mu.Lock()
	r.ensured[ns] = kubelabel.ProjectKey(projectID)
	r.mu.Unlock()
}

// forgetOnNotFound drops the namespace from the ensured set when a write into
// it found it gone, so the retry creates it again.
func (r *Reconciler) forgetOnNotFound(ns string, err error) {
	if apierrors.IsNotFound(err) {
		r.forget(ns)
	}
}

// forget drops ns from the ensured set: its next ensureNamespace or
// checkNamespace reads it again.
func (r *Reconciler) forget(ns string) {
	r.mu.Lock()
	delete(r.ensured, ns)
	r.mu.Unlock()
}
