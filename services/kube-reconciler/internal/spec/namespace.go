package spec

import (
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ambient-code/control-plane/libs/kubelabel"
)

// Namespace is the desired Namespace of a project.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// NamespaceName returns a namespace name from s lower-cased, which must be an
// RFC 1123 label (at most 63 characters). field names the API field s came
// from, for the *FieldError.
func NamespaceName(s, field string) (string, error) {
	ns := strings.ToLower(s)
	if ns == "" {
		return "", fieldErr(field, "empty")
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", fieldErr(field, "namespace %q: %s", clip(ns), strings.Join(errs, "; "))
	}
	return ns, nil
}

// SessionNamespace returns the namespace of the AgenticSessions of the
// sessions of project projectID: NamespaceName of it, or defaultNamespace
// (NAMESPACE) for sessions without a project.
func SessionNamespace(projectID, defaultNamespace string) (string, error) {
	if projectID == "" {
		return defaultNamespace, nil
	}
	return NamespaceName(projectID, "project_id")
}

// ProjectNamespace returns the desired Namespace of project id, with the
// managed labels. The name comes from the project's immutable id, never from
// its name: a project renamed p1 -> p2 must not move into namespace p2 (on
// the real API a project's id is the name it was created with). Name and
// ownership label are both the id's kubelabel.ProjectKey, so ids differing only in
// case share the namespace instead of refusing each other.
func ProjectNamespace(projectID string) (Namespace, error) {
	name, err := NamespaceName(projectID, "project_id")
	if err != nil {
		return Namespace{}, err
	}
	l, err := ProjectLabels(projectID, "project_id")
	if err != nil {
		return Namespace{}, err
	}
	return Namespace{Name: name, Labels: l}, nil
}

// OwnedBy reports whether an object with these labels belongs to project id:
// written by the control plane (LabelManagedBy) for that project
// (LabelProjectID, compared by kubelabel.ProjectKey). The label is lower-cased before
// comparing because releases before kubelabel.ProjectKey wrote the exact id: a
// namespace labelled "Future" by one of them is still project future's, and
// its next apply rewrites the label. LabelManaged is not part of it: it is
// ours to re-assert, and someone flipping it must not make us give up our
// own namespace.
func OwnedBy(objLabels map[string]string, projectID string) bool {
	return objLabels[LabelManagedBy] == ManagedByValue && kubelabel.ProjectKey(objLabels[LabelProjectID]) == kubelabel.ProjectKey(projectID)
}

// NamespaceOwnedBy is OwnedBy for the namespace of project id in
// installation instance: a namespace labelled (LabelInstance) for another
// installation is not ours, whatever its project label says. Project ids
// equal project names on the real API server, so two installations reading
// different APIs can both have project "team-a", and the second must not
// move its sessions into the first's namespace, where the first's
// RoleBindings give the first's groups access to them. A namespace without
// the label (written before namespaces carried it) is adopted, as it
// always was, and its next apply labels it. agui-proxy finds a project's
// namespace by the same rule (kubelabel.NamespaceOfInstance).
func NamespaceOwnedBy(objLabels map[string]string, projectID, instance string) bool {
	return OwnedBy(objLabels, projectID) && kubelabel.NamespaceOfInstance(objLabels, instance)
}

// ProjectSelector is the label selector of the objects the control plane
// manages for project id (prune selects with it, so one project never prunes
// another's bindings). id must be a valid label value (ProjectLabels).
func ProjectSelector(projectID string) string {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue, LabelProjectID: kubelabel.ProjectKey(projectID)}).String()
}

// ProjectLabels returns the managed labels for objects of project id, or a
// *FieldError naming field when id is not a valid label value. The exact id
// is checked, not its kubelabel.ProjectKey: Unicode lower-casing maps some non-ASCII
// letters to ASCII ones (the Kelvin sign to "k"), and such an id must not
// pass for another project.
func ProjectLabels(id, field string) (map[string]string, error) {
	if err := checkLabelValue(id, field); err != nil {
		return nil, err
	}
	return ManagedLabels(id), nil
}

// DenyList is a list of namespace patterns (path.Match syntax: "*", "?",
// "[...]") no project may have as its namespace, whether it exists or not.
type DenyList []string

// Match returns the first pattern matching namespace, if any. A malformed
// pattern (the configuration refuses them) matches nothing.
func (d DenyList) Match(namespace string) (string, bool) {
	for _, p := range d {
		if ok, err := path.Match(p, namespace); err == nil && ok {
			return p, true
		}
	}
	return "", false
}

func checkLabelValue(v, field string) error {
	if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
		return fieldErr(field, "%q is not a valid label value: %s", clip(v), strings.Join(errs, "; "))
	}
	return nil
}

// clip shortens user input quoted in error messages so a megabyte of garbage
// does not end up in a condition or a log line.
func clip(s string) string {
	const maxQuoted = 80
	if len(s) <= maxQuoted {
		return s
	}
	return s[:maxQuoted] + "..."
}
