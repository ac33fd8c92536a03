package spec

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
)

// RoleBinding is one desired RoleBinding: subject Group Group bound to the
// ClusterRole Role, named Name.
type RoleBinding struct {
	Name  string
	Group string
	Role  string
}

// RejectionError is a group_access entry that was not bound, with the reason.
type RejectionError struct {
	Index  int
	Group  string
	Role   string
	Reason string
}

// Error renders r as a *FieldError naming the entry.
func (r RejectionError) Error() string {
	return (&FieldError{Field: fmt.Sprintf("group_access[%d]", r.Index), Reason: r.Reason}).Error()
}

type groupAccess struct {
	Group string `json:"group"`
	Role  string `json:"role"`
}

// RoleBindingName returns "ambient-<group>-<role>".
func RoleBindingName(group, role string) string {
	return "ambient-" + group + "-" + role
}

// ValidRoleBindingName returns why name cannot name a RoleBinding, or
// nothing. The RBAC API validates RoleBinding names as path segments only
// (ValidateRBACName: no '/', '%', '.' or '..'), not as RFC 1123 subdomains,
// so group names with upper-case letters or ':' (OIDC groups,
// system:authenticated) give valid names. The name is never a label value.
func ValidRoleBindingName(name string) []string {
	return content.IsPathSegmentName(name)
}

// RoleBindings returns the desired RoleBindings of s, sorted by name, and the
// entries refused: roles off allowList (cluster-admin and anything else not
// shipped for projects), empty fields, and generated names that are not
// valid RoleBinding names (ValidRoleBindingName). Refused entries are never bound; the rest still are. A
// group_access value that is not a JSON list of {"group","role"} objects gives a
// *FieldError and no bindings: the caller must then leave existing bindings
// alone rather than prune everything on a typo.
func RoleBindings(s *ambientv1.ProjectSettings, allowList []string) ([]RoleBinding, []RejectionError, error) {
	raw := strings.TrimSpace(s.GetGroupAccess())
	if raw == "" || raw == "null" {
		return nil, nil, nil
	}
	var entries []groupAccess
	if err := json.Unmarshal([]byte(raw), &entries); err != nil {
		return nil, nil, fieldErr("group_access", "not a JSON list of {\"group\", \"role\"} objects: %v", err)
	}
	var (
		out      []RoleBinding
		rejected []RejectionError
		seen     = map[string]bool{}
	)
	for i, e := range entries {
		reject := func(format string, args ...any) {
			rejected = append(rejected, RejectionError{Index: i, Group: clip(e.Group), Role: clip(e.Role), Reason: fmt.Sprintf(format, args...)})
		}
		switch {
		case e.Group == "":
			reject("empty group")
			continue
		case e.Role == "":
			reject("empty role")
			continue
		case !slices.Contains(allowList, e.Role):
			reject("role %q is not on the allow-list %v", clip(e.Role), allowList)
			continue
		}
		name := RoleBindingName(e.Group, e.Role)
		if errs := ValidRoleBindingName(name); len(errs) > 0 {
			reject("rolebinding name %q: %s", clip(name), strings.Join(errs, "; "))
			continue
		}
		if seen[name] {
			continue // the same entry twice binds once
		}
		seen[name] = true
		out = append(out, RoleBinding{Name: name, Group: e.Group, Role: e.Role})
	}
	slices.SortFunc(out, func(a, b RoleBinding) int { return strings.Compare(a.Name, b.Name) })
	return out, rejected, nil
}
