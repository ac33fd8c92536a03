package reconcile

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// project applies the project's Namespace. A deleted project keeps its
// namespace (and everything in it): deleting user workloads is not this
// service's call.
func (r *Reconciler) project(ctx context.Context, p *ambientv1.Project, deleted bool, log *slog.Logger) (string, error) {
	if deleted {
		log.DebugContext(ctx, "project deleted, namespace kept")
		return metrics.ResultOK, nil
	}
	ns, err := spec.ProjectNamespace(p)
	if err != nil {
		r.cfg.Metrics.Rejected.WithLabelValues("projects", "invalid_name").Inc()
		log.WarnContext(ctx, "project cannot have a namespace", slog.String(logkey.Reason, err.Error()))
		return metrics.ResultInvalid, nil
	}
	if err := r.cfg.Applier.Namespace(ctx, ns); err != nil {
		return metrics.ResultError, err
	}
	r.markEnsured(ns.Name, p.GetMetadata().GetId())
	return metrics.ResultOK, nil
}

// projectNamespace returns the namespace of project id: the project's name
// from KV ambient-objects, lower-cased. When the project is unknown (not yet
// seen, or deleted) the lower-cased id is used, which is the same namespace
// whenever id equals name, as the real API enforces. Sessions without a
// project go to DefaultNamespace.
func (r *Reconciler) projectNamespace(ctx context.Context, projectID string) (string, error) {
	if projectID == "" {
		return r.cfg.DefaultNamespace, nil
	}
	o, err := stored(ctx, r.cfg.Objects, eventsv1.Resource_RESOURCE_PROJECTS, projectID)
	if err != nil && !errors.Is(err, events.ErrBadEvent) {
		return "", err
	}
	// An undecodable KV entry falls back to the id like an absent one.
	name := projectID
	if p := o.GetProject(); p != nil && p.GetName() != "" {
		name = p.GetName()
	}
	return spec.NamespaceName(name, "project_id")
}

// ensureNamespace applies the namespace of a project before objects go into
// it (a session or settings event may arrive before the project's), once per
// process unless a write into it failed with NotFound.
func (r *Reconciler) ensureNamespace(ctx context.Context, ns, projectID string) error {
	r.mu.Lock()
	done := r.ensured[ns] == projectID
	r.mu.Unlock()
	if done {
		return nil
	}
	if ns == r.cfg.DefaultNamespace && projectID == "" {
		// The default namespace is the deployment's, not a project's: never
		// label it as managed.
		return nil
	}
	labels, err := spec.ProjectLabels(projectID, "project_id")
	if err != nil {
		return err
	}
	if err := r.cfg.Applier.Namespace(ctx, spec.Namespace{Name: ns, Labels: labels}); err != nil {
		return err
	}
	r.markEnsured(ns, projectID)
	return nil
}

func (r *Reconciler) markEnsured(ns, projectID string) {
	r.mu.Lock()
	r.ensured[ns] = projectID
	r.mu.Unlock()
}

// forgetOnNotFound drops the namespace from the ensured set when a write into
// it found it gone, so the retry creates it again.
func (r *Reconciler) forgetOnNotFound(ns string, err error) {
	if apierrors.IsNotFound(err) {
		r.mu.Lock()
		delete(r.ensured, ns)
		r.mu.Unlock()
	}
}
