package apply

import (
	"context"
	"fmt"
	"maps"

	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

// Namespace makes ns exist with its labels, adopting only what is ours: a
// missing namespace is created (Create, so of two projects racing for one
// name exactly one wins); an existing one is written only when it carries the
// ownership labels of the same project (spec.OwnedBy with
// ns.Labels[spec.LabelProjectID], and of no other installation than
// ns.Labels[spec.LabelInstance]: spec.NamespaceOwnedBy), otherwise Namespace returns a
// *NotOwnedError and writes nothing. On our own namespace only the labels are
// owned: a changed managed label is re-asserted (server-side apply, forced),
// and everything else (other labels, annotations, finalizers) is left alone;
// labels already right cost no write.
func (a *Applier) Namespace(ctx context.Context, ns spec.Namespace) error {
	projectID, instance := ns.Labels[spec.LabelProjectID], ns.Labels[spec.LabelInstance]
	cur, err := a.kube.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		created := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: maps.Clone(ns.Labels)}}
		_, err = a.kube.CoreV1().Namespaces().Create(ctx, created, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
		// Someone else created it meanwhile: judge it like any existing one.
		cur, err = a.kube.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", ns.Name, err)
	}
	if !spec.NamespaceOwnedBy(cur.Labels, projectID, instance) {
		return notOwned(cur, projectID, instance)
	}
	if hasLabels(cur.Labels, ns.Labels) {
		return nil
	}
	cfg := corev1ac.Namespace(ns.Name).WithLabels(ns.Labels)
	if _, err := a.kube.CoreV1().Namespaces().Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("apply namespace %s: %w", ns.Name, err)
	}
	return nil
}

// CheckNamespace reports whether namespace name exists, and returns a
// *NotOwnedError when it exists without project id's ownership labels or
// labelled for another installation than instance (spec.NamespaceOwnedBy).
// It never writes: callers that only remove things (a prune) use it so that
// a namespace that is not ours is neither created nor touched.
func (a *Applier) CheckNamespace(ctx context.Context, name, projectID, instance string) (exists bool, err error) {
	cur, err := a.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get namespace %s: %w", name, err)
	}
	if !spec.NamespaceOwnedBy(cur.Labels, projectID, instance) {
		return true, notOwned(cur, projectID, instance)
	}
	return true, nil
}

// NotOwnedError is a namespace that exists without the ownership labels of
// the project that wants it: created by someone else, by the control
// plane for another project, or by another installation of it. Nothing is
// written to it.
type NotOwnedError struct {
	Namespace string
	ProjectID string
	// Instance is the installation that wants it.
	Instance string
	// ManagedBy, Owner and OwnerInstance are the namespace's
	// LabelManagedBy, LabelProjectID and LabelInstance values ("" when
	// absent), for the reason shown.
	ManagedBy     string
	Owner         string
	OwnerInstance string
}

// Error implements error.
func (e *NotOwnedError) Error() string {
	switch {
	case e.ManagedBy != spec.ManagedByValue:
		return fmt.Sprintf("namespace %q exists and is not managed by the control plane", e.Namespace)
	case kubelabel.ProjectKey(e.Owner) != kubelabel.ProjectKey(e.ProjectID):
		return fmt.Sprintf("namespace %q belongs to project %q, not %q", e.Namespace, e.Owner, e.ProjectID)
	default:
		return fmt.Sprintf("namespace %q belongs to another installation of the control plane (%s=%q), not %q", e.Namespace, spec.LabelInstance, e.OwnerInstance, e.Instance)
	}
}

func notOwned(ns *corev1.Namespace, projectID, instance string) *NotOwnedError {
	return &NotOwnedError{Namespace: ns.Name, ProjectID: projectID, Instance: instance,
		ManagedBy: ns.Labels[spec.LabelManagedBy], Owner: ns.Labels[spec.LabelProjectID], OwnerInstance: ns.Labels[spec.LabelInstance]}
}

// hasLabels reports whether have holds every key of want with its value.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}
