// Package spec computes the desired Kubernetes objects for ambient API objects:
// the Namespace of a project, the RoleBindings of project settings and the
// AgenticSession of a session. It is pure (no I/O) so every rule of the
// mapping is unit-tested and fuzzed; package apply writes the result.
//
// Every function here treats its input as untrusted: malformed JSON fields,
// invalid names and oversize values give a *FieldError naming the API field,
// never a panic.
package spec

// Labels and annotations the control plane puts on everything it manages.
const (
	// LabelManaged marks objects written by the control plane ("true").
	LabelManaged = "ambient-code.io/managed"
	// LabelManagedBy names the writer; prune and the status informer select on it.
	LabelManagedBy = "ambient-code.io/managed-by"
	// LabelProjectID is the ambient project id the object belongs to.
	LabelProjectID = "ambient-code.io/project-id"
	// AnnotationSessionID maps an AgenticSession back to its ambient session. It
	// is an annotation, not a label, because session ids need not be valid
	// label values.
	AnnotationSessionID = "ambient-code.io/session-id"

	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "ambient-control-plane"

	// reservedPrefix is the label/annotation key prefix users may not set on
	// their sessions: those keys drive selection and pruning.
	reservedPrefix = "ambient-code.io/"
)

// ManagedSelector is the label selector matching every object the control plane
// manages.
const ManagedSelector = LabelManagedBy + "=" + ManagedByValue

// ManagedLabels returns the labels put on every managed object of a project.
func ManagedLabels(projectID string) map[string]string {
	return map[string]string{
		LabelManaged:   "true",
		LabelManagedBy: ManagedByValue,
		LabelProjectID: projectID,
	}
}
