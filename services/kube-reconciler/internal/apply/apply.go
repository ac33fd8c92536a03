// Package apply writes desired objects to Kubernetes with server-side apply,
// as the field manager FieldManager, using apply configurations (core and
// RBAC) or, for the AgenticSession (a CRD without generated apply
// configurations), an unstructured object holding only the fields the
// reconciler sets, pruned to the installed CRD's schema. Applying the same
// desired state twice is a no-op on the server (no new resourceVersion), and
// fields owned by other managers, such as the operator's status, are never
// touched.
//
// An Applier is safe for concurrent use.
package apply

import (
	"errors"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// ErrNoPruner is returned by Applier.Session when the Applier has no pruner.
var ErrNoPruner = errors.New("no agenticsession crd pruner: refusing to apply fields the crd may not declare")

// FieldManager is the server-side apply field manager of the kube-reconciler.
const FieldManager = "ambient-kube-reconciler"

// AgenticSessionGVR is the AgenticSession resource.
var AgenticSessionGVR = schema.GroupVersionResource{Group: spec.Group, Version: spec.Version, Resource: spec.Resource}

// sessionPruner drops from a desired AgenticSession every field the installed
// CRD does not declare (crd.Watcher), or says why it cannot yet.
type sessionPruner interface {
	PruneSession(u *unstructured.Unstructured) error
}

var _ sessionPruner = (*crd.Watcher)(nil)

// Applier writes Namespaces, RoleBindings and AgenticSessions.
type Applier struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	pruner sessionPruner
}

// New returns an Applier using the given clients. pruner fits AgenticSessions
// to the installed CRD; without one, Session returns ErrNoPruner rather than
// applying fields the CRD may not declare.
func New(kube kubernetes.Interface, dyn dynamic.Interface, pruner sessionPruner) *Applier {
	return &Applier{kube: kube, dyn: dyn, pruner: pruner}
}
