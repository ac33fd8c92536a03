// Package kubelabel holds the labels by which the control plane's
// Kubernetes objects name their writer and their project. kube-reconciler
// writes them on namespaces, RoleBindings and AgenticSessions; agui-proxy
// reads them to find a project's namespace. Both must agree on the keys
// and on how a project id becomes a label value, so both use this package.
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
)

// ProjectKey returns the form of a project id that identifies the project
// in Kubernetes: its namespace name, the value of its ProjectID label and
// of the selector of its objects. It is the id lower-cased because the real
// API server puts a session into the namespace of its lower-cased
// project_id and accepts a project_id that names no project: "Future" and
// "future" are one project namespace there, so they must be one owner
// here, or whichever came second would be refused. Real project ids are
// DNS-1123 labels (already lower case), so no two projects share a key.
func ProjectKey(projectID string) string { return strings.ToLower(projectID) }
