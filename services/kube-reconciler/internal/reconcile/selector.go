package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// ErrInvalidSelector is returned by ParseSelector.
var ErrInvalidSelector = errors.New("invalid session selector")

// Selector decides which sessions run on Kubernetes (and so get an
// AgenticSession) and which are left to another executor such as the local
// runner-manager. The original used kube_cr_name for this, but the real API now
// sets kube_cr_name on every session, so the choice is explicit configuration
// (KUBE_SESSION_SELECTOR):
//
//	all                  every session (default)
//	none                 no session (Namespaces and RoleBindings only)
//	projects=a,b,c       sessions whose project_id is listed
//	label=key=value      sessions whose labels JSON has key=value
//
// A session that stops being selected keeps its AgenticSession; a deleted
// session's AgenticSession is always deleted.
type Selector struct {
	mode     string
	projects []string
	key      string
	value    string
}

// Selector modes.
const (
	SelectAll      = "all"
	SelectNone     = "none"
	SelectProjects = "projects"
	SelectLabel    = "label"
)

// ParseSelector parses the forms documented on Selector.
func ParseSelector(s string) (Selector, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == SelectAll:
		return Selector{mode: SelectAll}, nil
	case s == SelectNone:
		return Selector{mode: SelectNone}, nil
	case strings.HasPrefix(s, SelectProjects+"="):
		var ps []string
		for p := range strings.SplitSeq(strings.TrimPrefix(s, SelectProjects+"="), ",") {
			if p = strings.TrimSpace(p); p != "" {
				ps = append(ps, p)
			}
		}
		if len(ps) == 0 {
			return Selector{}, fmt.Errorf("%q: empty project list: %w", s, ErrInvalidSelector)
		}
		return Selector{mode: SelectProjects, projects: ps}, nil
	case strings.HasPrefix(s, SelectLabel+"="):
		k, v, ok := strings.Cut(strings.TrimPrefix(s, SelectLabel+"="), "=")
		if !ok || k == "" {
			return Selector{}, fmt.Errorf("%q: want label=key=value: %w", s, ErrInvalidSelector)
		}
		return Selector{mode: SelectLabel, key: k, value: v}, nil
	}
	return Selector{}, fmt.Errorf("%q: want all, none, projects=a,b or label=key=value: %w", s, ErrInvalidSelector)
}

// String renders the selector in the form ParseSelector reads.
func (sel Selector) String() string {
	switch sel.mode {
	case SelectNone:
		return SelectNone
	case SelectProjects:
		return SelectProjects + "=" + strings.Join(sel.projects, ",")
	case SelectLabel:
		return SelectLabel + "=" + sel.key + "=" + sel.value
	}
	return SelectAll
}

// Selects reports whether s runs on Kubernetes. A session whose labels are not
// valid JSON is not selected by a label selector (and so not reported by
// this service).
func (sel Selector) Selects(s *ambientv1.Session) bool {
	switch sel.mode {
	case SelectNone:
		return false
	case SelectProjects:
		return slices.Contains(sel.projects, s.GetProjectId())
	case SelectLabel:
		var labels map[string]string
		if json.Unmarshal([]byte(s.GetLabels()), &labels) != nil {
			return false
		}
		v, ok := labels[sel.key]
		return ok && v == sel.value
	}
	return true
}
