package spec

import (
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Namespace is the desired Namespace of a project.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// NamespaceName returns the namespace of a project: its name lower-cased, which
// must be an RFC 1123 label (at most 63 characters). field names the API field
// the name came from, for the *FieldError.
func NamespaceName(name, field string) (string, error) {
	ns := strings.ToLower(name)
	if ns == "" {
		return "", fieldErr(field, "empty")
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", fieldErr(field, "namespace %q: %s", clip(ns), strings.Join(errs, "; "))
	}
	return ns, nil
}

// ProjectNamespace returns the desired Namespace of p, with the managed labels.
func ProjectNamespace(p *ambientv1.Project) (Namespace, error) {
	name, err := NamespaceName(p.GetName(), "name")
	if err != nil {
		return Namespace{}, err
	}
	id := p.GetMetadata().GetId()
	if err := checkLabelValue(id, "id"); err != nil {
		return Namespace{}, err
	}
	return Namespace{Name: name, Labels: ManagedLabels(id)}, nil
}

// ProjectLabels returns the managed labels for objects of project id, or a
// *FieldError naming field when id is not a valid label value.
func ProjectLabels(id, field string) (map[string]string, error) {
	if err := checkLabelValue(id, field); err != nil {
		return nil, err
	}
	return ManagedLabels(id), nil
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
