package session

import (
	"fmt"
	"slices"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Selector places sessions: it says which sessions one executor runs
// (kube-reconciler as AgenticSessions, runner-manager as local runners).
// The original control plane sent a session to Kubernetes when it had a
// kube_cr_name; the real API sets kube_cr_name on every session, so the
// choice is explicit configuration of each executor. A session should run in
// exactly one place: configure one executor with a selector and the other
// with its [Selector.Complement] (or an equivalent).
//
// A selector is a project rule and a label rule, both of which must hold:
// the session's project_id is one of Projects (no list: any project), and
// its labels JSON object has Label's key with Label's value (no label: none
// needed). A session whose labels are not a JSON object of strings has no
// labels, so a label rule never selects it. The zero value selects every
// session.
type Selector struct {
	none     bool     // selects nothing (before negation)
	projects []string // nil: any project
	key      string   // "" with !hasLabel: no label rule
	value    string
	hasLabel bool
	not      bool // the complement of the rest
}

// Forms read by ParseSelector (kube-reconciler's KUBE_SESSION_SELECTOR).
const (
	SelectAll      = "all"
	SelectNone     = "none"
	SelectProjects = "projects"
	SelectLabel    = "label"
)

// anyProject in a project list (runner-manager's RUNNER_PROJECTS) selects
// every project.
const anyProject = "*"

// ParseSelector reads one of these forms (surrounding space ignored):
//
//	all | ""             every session (the zero Selector)
//	none                 no session
//	projects=a,b,c       sessions whose project_id is listed
//	label=key=value      sessions whose labels JSON has key=value
//
// Project ids are trimmed and empty ones dropped. It returns an error
// wrapping [ErrInvalidSelector] for anything else, for an empty project
// list, or for a label without "=" or with an empty key.
func ParseSelector(s string) (Selector, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == SelectAll:
		return Selector{}, nil
	case s == SelectNone:
		return Selector{none: true}, nil
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
		return Selector{projects: ps}, nil
	case strings.HasPrefix(s, SelectLabel+"="):
		k, v, err := parseLabel(strings.TrimPrefix(s, SelectLabel+"="))
		if err != nil {
			return Selector{}, fmt.Errorf("%q: want label=key=value: %w", s, err)
		}
		return Selector{key: k, value: v, hasLabel: true}, nil
	}
	return Selector{}, fmt.Errorf("%q: want all, none, projects=a,b or label=key=value: %w", s, ErrInvalidSelector)
}

// NewSelector returns the selector of a project list and an optional label
// (runner-manager's RUNNER_PROJECTS and RUNNER_SESSION_LABEL): projects
// lists project ids, and "*" among them means every project; an empty list
// selects nothing. label is "" (no label needed) or "key=value". It returns
// an error wrapping [ErrInvalidSelector] for any other label.
func NewSelector(projects []string, label string) (Selector, error) {
	sel := Selector{}
	switch {
	case slices.Contains(projects, anyProject):
	case len(projects) == 0:
		sel.none = true
	default:
		sel.projects = slices.Clone(projects)
	}
	if label != "" {
		k, v, err := parseLabel(label)
		if err != nil {
			return Selector{}, fmt.Errorf("label %q: want key=value: %w", label, err)
		}
		sel.key, sel.value, sel.hasLabel = k, v, true
	}
	return sel, nil
}

// parseLabel splits "key=value"; the key must not be empty.
func parseLabel(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", ErrInvalidSelector
	}
	return k, v, nil
}

// Complement returns the selector of exactly the sessions sel does not
// select: every session is selected by one of the two.
func (sel Selector) Complement() Selector {
	sel.projects = slices.Clone(sel.projects)
	sel.not = !sel.not
	return sel
}

// Selects reports whether sel selects s.
func (sel Selector) Selects(s *ambientv1.Session) bool {
	return sel.rules(s) != sel.not
}

// rules applies the project and label rules, before negation.
func (sel Selector) rules(s *ambientv1.Session) bool {
	if sel.none {
		return false
	}
	if sel.projects != nil && !slices.Contains(sel.projects, s.GetProjectId()) {
		return false
	}
	if !sel.hasLabel {
		return true
	}
	// Read as kube-reconciler reads them for the AgenticSession's labels
	// (DecodeJSON after trimming), so a session's executor is chosen by the
	// labels its CR would carry.
	labels, err := DecodeJSON[map[string]string](strings.TrimSpace(s.GetLabels()))
	if err != nil {
		return false
	}
	v, ok := labels[sel.key]
	return ok && v == sel.value
}

// String renders sel for logs and errors. A selector ParseSelector can read
// renders in that form (all, none, projects=a,b, label=key=value); both
// rules render as "projects=a,b label=key=value", and a complement as
// "not (...)".
func (sel Selector) String() string {
	var s string
	switch {
	case sel.none:
		s = SelectNone
	case sel.projects != nil && sel.hasLabel:
		s = SelectProjects + "=" + strings.Join(sel.projects, ",") + " " + SelectLabel + "=" + sel.key + "=" + sel.value
	case sel.projects != nil:
		s = SelectProjects + "=" + strings.Join(sel.projects, ",")
	case sel.hasLabel:
		s = SelectLabel + "=" + sel.key + "=" + sel.value
	default:
		s = SelectAll
	}
	if sel.not {
		return "not (" + s + ")"
	}
	return s
}
