package reconcile

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Selector decides which sessions this deployment runs as local processes.
// It replaces the original "kube_cr_name is empty" rule, which the real API
// server defeats by setting kube_cr_name on every session.
//
//   - Projects: project ids whose sessions run here; "*" (the default) means
//     every project.
//   - Label: "key=value" that a session's labels JSON must contain; "" means
//     no label is required.
//
// Deploy kube-reconciler with the complementary selection so a session runs
// in exactly one place.
type Selector struct {
	Projects []string
	Label    string
}

// ParseLabel validates a "key=value" label requirement ("" is valid).
func ParseLabel(s string) (key, value string, err error) {
	if s == "" {
		return "", "", nil
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("label selector %q: want key=value", s)
	}
	return k, v, nil
}

// Match reports whether s is selected. A session whose labels JSON is
// malformed does not match a label requirement.
func (sel Selector) Match(s *ambientv1.Session) bool {
	if !slices.Contains(sel.Projects, "*") && !slices.Contains(sel.Projects, s.GetProjectId()) {
		return false
	}
	k, v, err := ParseLabel(sel.Label)
	if err != nil || k == "" {
		return err == nil
	}
	var labels map[string]string
	if json.Unmarshal([]byte(s.GetLabels()), &labels) != nil {
		return false
	}
	got, ok := labels[k]
	return ok && got == v
}
