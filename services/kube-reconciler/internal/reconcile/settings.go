package reconcile

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
)

// settings makes the project's managed RoleBindings match group_access:
// entries refused (role off the allow-list, invalid generated name, a name
// taken by a binding we do not manage) are logged and counted and never bound; bindings whose entry is gone are pruned; a
// deleted settings object prunes them all. Only the project's own namespace
// is written, and only bindings labelled with the project's id are pruned; a
// namespace that is denied or not the project's is refused with no write. A
// malformed group_access leaves the existing bindings alone: pruning
// everything on a typo would lock users out.
func (r *Reconciler) settings(ctx context.Context, ps *ambientv1.ProjectSettings, deleted bool, log *slog.Logger) (string, error) {
	projectID := ps.GetProjectId()
	log = log.With(slog.String(logkey.ProjectID, projectID))
	ns, err := r.projectNamespace(projectID)
	if err == nil && projectID == "" {
		err = &spec.FieldError{Field: "project_id", Reason: "empty"}
	}
	var labels map[string]string
	if err == nil {
		labels, err = spec.ProjectLabels(projectID, "project_id")
		r.withInstance(labels)
	}
	if err != nil {
		r.cfg.Metrics.Reject(ctx, "project_settings", metrics.RejectInvalidProject)
		log.WarnContext(ctx, "project settings refused", slog.String(logkey.Reason, err.Error()))
		return metrics.ResultInvalid, nil
	}
	var want []spec.RoleBinding
	result := metrics.ResultOK
	if !deleted {
		var rejected []spec.RejectionError
		want, rejected, err = spec.RoleBindings(ps, r.cfg.RoleAllowList)
		if err != nil {
			r.cfg.Metrics.Reject(ctx, "project_settings", metrics.RejectMalformedGroupAccess)
			log.WarnContext(ctx, "group_access refused, bindings left as they are", slog.String(logkey.Reason, err.Error()))
			return metrics.ResultInvalid, nil
		}
		for _, rej := range rejected {
			result = metrics.ResultInvalid
			r.cfg.Metrics.Reject(ctx, "project_settings", metrics.RejectGroupAccessEntry)
			log.WarnContext(ctx, "group_access entry not bound", slog.String(logkey.Reason, rej.Error()))
		}
	}
	exists := true
	if len(want) > 0 {
		err = r.ensureNamespace(ctx, ns, projectID)
	} else {
		// Nothing to bind: only a prune, which must not create the namespace.
		exists, err = r.checkNamespace(ctx, ns, projectID)
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		r.cfg.Metrics.Reject(ctx, "project_settings", refused.metricReason())
		log.ErrorContext(ctx, "project settings refused: project namespace not ours", slog.String(logkey.Namespace, ns),
			slog.String(logkey.Reason, refused.Detail))
		return metrics.ResultInvalid, nil
	}
	if err != nil {
		return metrics.ResultError, err
	}
	if !exists {
		return result, nil // no namespace, so no binding to prune
	}
	res, err := r.cfg.Applier.RoleBindings(ctx, ns, labels, want, r.cfg.Owner)
	r.cfg.Metrics.Pruned(ctx, res.Pruned)
	for _, name := range res.NotOwned {
		result = metrics.ResultInvalid
		r.cfg.Metrics.Reject(ctx, "project_settings", metrics.RejectRoleBindingNotOwned)
		log.WarnContext(ctx, "group_access entry not bound: a RoleBinding of its name exists that this control plane does not manage",
			slog.String(logkey.Namespace, ns), slog.String("rolebinding", name))
	}
	if err != nil {
		r.forgetOnNotFound(ns, err)
		return metrics.ResultError, err
	}
	if res.Pruned > 0 || res.Recreated > 0 {
		log.InfoContext(ctx, "rolebindings changed", slog.String(logkey.Namespace, ns),
			slog.Int("pruned", res.Pruned), slog.Int("recreated", res.Recreated))
	}
	return result, nil
}

// movedFrom returns the project that project settings event ev moved away
// from (old_object's project_id, when its key differs from the project of
// obj, the state just reconciled), or "".
func movedFrom(ev *eventsv1.ResourceEvent, obj *eventsv1.Object) string {
	old, cur := ev.GetOldObject().GetProjectSettings(), obj.GetProjectSettings()
	if old == nil || cur == nil || old.GetProjectId() == "" ||
		kubelabel.ProjectKey(old.GetProjectId()) == kubelabel.ProjectKey(cur.GetProjectId()) {
		return ""
	}
	return old.GetProjectId()
}

// pruneMoved prunes the managed RoleBindings of oldProject after project
// settings settingsID moved to another project: reconciling the settings
// writes only the new project's bindings, and the old project's users would
// otherwise keep their access until the resync found the orphans. Under the
// old project's lock, and only when no other stored settings still name it
// (the moved settings' own stored copy may still be the old state: KV is
// written just after the event is published). Like settings, only the old
// project's own namespace when it is the project's (checkNamespace), and
// only bindings this installation owns, are touched.
func (r *Reconciler) pruneMoved(ctx context.Context, settingsID, oldProject string, log *slog.Logger) error {
	log = log.With(slog.String("old_project_id", oldProject))
	defer r.keys.Lock(lockKey(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, "", oldProject))()
	named, err := settingsProjects(ctx, r.cfg.Objects, settingsID)
	if err != nil {
		return err
	}
	if named[kubelabel.ProjectKey(oldProject)] {
		return nil // other settings still bind the old project: theirs to reconcile
	}
	ns, err := r.projectNamespace(oldProject)
	if err != nil {
		return nil //nolint:nilerr // not a project namespace: nothing of ours to prune
	}
	labels, err := spec.ProjectLabels(oldProject, "project_id")
	if err != nil {
		return nil //nolint:nilerr // no valid label, so no binding of ours carries it
	}
	exists, err := r.checkNamespace(ctx, ns, oldProject)
	var refused *RefusedError
	if errors.As(err, &refused) {
		log.WarnContext(ctx, "old project's rolebindings not pruned: its namespace is not ours", slog.String(logkey.Namespace, ns),
			slog.String(logkey.Reason, refused.Detail))
		return nil
	}
	if err != nil || !exists {
		return err
	}
	res, err := r.cfg.Applier.RoleBindings(ctx, ns, labels, nil, r.cfg.Owner)
	r.cfg.Metrics.Pruned(ctx, res.Pruned)
	if err != nil {
		r.forgetOnNotFound(ns, err)
		return err
	}
	if res.Pruned > 0 {
		log.InfoContext(ctx, "rolebindings of the project the settings moved from removed", slog.String(logkey.Namespace, ns),
			slog.Int(logkey.Count, res.Pruned))
	}
	return nil
}
