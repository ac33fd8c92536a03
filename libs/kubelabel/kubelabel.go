// Package kubelabel holds the labels by which the control plane's
// Kubernetes objects name their writer, their project and their
// installation. kube-reconciler writes them on namespaces, RoleBindings and
// AgenticSessions; agui-proxy reads them to find a project's namespace. Both
// must agree on the keys, on how a project id becomes a label value and on
// which namespace belongs to which installation, so both use this package.
package kubelabel

import "strings"

const (
	// ManagedBy names the writer of an object; its value is ManagedByValue.
	ManagedBy = "ambient-code.io/managed-by"
	// ManagedByValue is the value of ManagedBy on the control plane's objects.
	ManagedByValue = "ambient-control-plane"
	// ProjectID is the ambient project an object belongs to, as its
	// ProjectKey.
	ProjectID = "ambient-code.io/project-id"
	// Instance names the control-plane installation that wrote an object
	// (CONTROL_PLANE_INSTANCE), so installations sharing a cluster tell
	// their objects apart.
	Instance = "ambient-code.io/instance"
)

// NamespaceOfInstance reports whether a project namespace labelled l may
// belong to installation instance: it carries instance in its Instance
// label, or no Instance label at all. An unlabelled one was written before
// namespaces carried the label (one installation per cluster was all that
// worked then): kube-reconciler adopts it, as it always did, and labels it
// on its next apply, so agui-proxy must count it as its own installation's
// too, or such a project's sessions would be unreachable until then. A
// namespace labelled for another installation is never ours: project ids
// equal project names, so two installations can both have a project
// "team-a", and the other's namespace holds the other's RoleBindings.
func NamespaceOfInstance(l map[string]string, instance string) bool {
	got, labelled := l[Instance]
	return !labelled || got == instance
}

// ProjectKey returns the form of a project id that identifies the project
// in Kubernetes: its namespace name, the value of its ProjectID label and
// of the selector of its objects. It is the id lower-cased because the real
// API server puts a session into the namespace of its lower-cased
// project_id and accepts a project_id that names no project: "Future" and
// "future" are one project namespace there, so they must be one owner
// here, or whichever came second would be refused. Real project ids are
// DNS-1123 labels (already lower case), so no two projects share a key.
func ProjectKey(projectID string) string { return strings.ToLower(projectID) }
