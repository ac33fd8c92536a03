// Package apply writes desired objects to Kubernetes with server-side apply,
// as the field manager FieldManager, using apply configurations (core and RBAC)
// or an unstructured object holding only the fields the reconciler owns (the
// AgenticSession). Applying the same desired state twice is a no-op on the
// server (no new resourceVersion), and fields owned by other managers, such as
// the operator's status, are never touched.
//
// An Applier is safe for concurrent use.
package apply

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// FieldManager is the server-side apply field manager of the kube-reconciler.
const FieldManager = "ambient-kube-reconciler"

// AgenticSessionGVR is the AgenticSession resource.
var AgenticSessionGVR = schema.GroupVersionResource{Group: "vteam.ambient-code", Version: "v1alpha1", Resource: "agenticsessions"}

// Applier writes Namespaces, RoleBindings and AgenticSessions.
type Applier struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

// New returns an Applier using the given clients.
func New(kube kubernetes.Interface, dyn dynamic.Interface) *Applier {
	return &Applier{kube: kube, dyn: dyn}
}
