package session_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

func sess(project, labels string) *ambientv1.Session {
	s := &ambientv1.Session{ProjectId: proto.String(project)}
	if labels != "" {
		s.Labels = proto.String(labels)
	}
	return s
}

// kube-reconciler's KUBE_SESSION_SELECTOR forms: what each selects, and
// that String gives back the form.
func TestParseSelector(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		str    string
		s      *ambientv1.Session
		want   bool
		errant bool
	}{
		{"empty is all", "", "all", sess("p", ""), true, false},
		{"all", " all ", "all", sess("p", `{bad`), true, false},
		{"none", "none", "none", sess("p", ""), false, false},
		{"listed project", "projects=a, p ,", "projects=a,p", sess("p", ""), true, false},
		{"other project", "projects=a,b", "projects=a,b", sess("p", ""), false, false},
		{"label match", "label=run=kube", "label=run=kube", sess("p", `{"run":"kube"}`), true, false},
		{"label with = in the value", "label=k=a=b", "label=k=a=b", sess("p", `{"k":"a=b"}`), true, false},
		{"empty label value", "label=k=", "label=k=", sess("p", `{"k":""}`), true, false},
		{"label mismatch", "label=run=kube", "label=run=kube", sess("p", `{"run":"local"}`), false, false},
		{"labels not json", "label=run=kube", "label=run=kube", sess("p", `{bad`), false, false},
		{"labels not strings", "label=run=kube", "label=run=kube", sess("p", `{"run":1}`), false, false},
		{"no labels", "label=run=kube", "label=run=kube", sess("p", ""), false, false},
		{"empty project list", "projects= , ", "", nil, false, true},
		{"label without value", "label=run", "", nil, false, true},
		{"label without key", "label==x", "", nil, false, true},
		{"unknown form", "some", "", nil, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sel, err := session.ParseSelector(tc.in)
			if tc.errant {
				if !errors.Is(err, session.ErrInvalidSelector) {
					t.Fatalf("ParseSelector(%q) = %v, %v; want ErrInvalidSelector", tc.in, sel, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.String(); got != tc.str {
				t.Errorf("String = %q, want %q", got, tc.str)
			}
			if got := sel.Selects(tc.s); got != tc.want {
				t.Errorf("Selects = %v, want %v", got, tc.want)
			}
			if again, err := session.ParseSelector(sel.String()); err != nil || again.String() != sel.String() {
				t.Errorf("String does not parse back: %v, %v", again, err)
			}
		})
	}
}

// runner-manager's RUNNER_PROJECTS and RUNNER_SESSION_LABEL: both rules
// must hold.
func TestNewSelector(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		projects []string
		label    string
		s        *ambientv1.Session
		want     bool
	}{
		{"all", []string{"*"}, "", sess("p", ""), true},
		{"star among others", []string{"a", "*"}, "", sess("p", ""), true},
		{"listed project", []string{"a", "p"}, "", sess("p", ""), true},
		{"other project", []string{"a"}, "", sess("p", ""), false},
		{"no projects", nil, "", sess("p", ""), false},
		{"label match", []string{"*"}, "run=local", sess("p", `{"run":"local"}`), true},
		{"label mismatch", []string{"*"}, "run=local", sess("p", `{"run":"kube"}`), false},
		{"label missing", []string{"*"}, "run=local", sess("p", `{}`), false},
		{"bad labels json", []string{"*"}, "run=local", sess("p", `{bad`), false},
		// Read as kube-reconciler reads them for the CR's labels: white
		// space around (Unicode too) is trimmed, trailing data refused.
		{"labels in unicode space", []string{"*"}, "run=local", sess("p", "\u00a0{\"run\":\"local\"}\u0085"), true},
		{"labels with trailing data", []string{"*"}, "run=local", sess("p", `{"run":"local"} {}`), false},
		{"project and label", []string{"p"}, "run=local", sess("p", `{"run":"local"}`), true},
		{"label but other project", []string{"a"}, "run=local", sess("p", `{"run":"local"}`), false},
		// An empty value selects the label set to "", never its absence.
		{"empty value matches empty", []string{"*"}, "run=", sess("p", `{"run":""}`), true},
		{"empty value, label missing", []string{"*"}, "run=", sess("p", `{}`), false},
		{"empty value, no labels", []string{"*"}, "run=", sess("p", ""), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sel, err := session.NewSelector(tc.projects, tc.label)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Selects(tc.s); got != tc.want {
				t.Fatalf("%v.Selects = %v, want %v", sel, got, tc.want)
			}
		})
	}
	for _, bad := range []string{"run", "=local"} {
		if _, err := session.NewSelector([]string{"*"}, bad); !errors.Is(err, session.ErrInvalidSelector) {
			t.Errorf("label %q: err = %v, want ErrInvalidSelector", bad, err)
		}
	}
}

// The complement selects exactly what the selector does not, malformed
// labels included, so an executor configured with it never runs a session
// twice nor leaves one unplaced.
func FuzzSelectorComplement(f *testing.F) {
	for _, s := range []string{"all", "none", "projects=a,p", "label=run=kube", "label=k="} {
		f.Add(s, "p", `{"run":"kube"}`)
		f.Add(s, "a", `{bad`)
		f.Add(s, "", "")
	}
	f.Fuzz(func(t *testing.T, form, project, labels string) {
		sel, err := session.ParseSelector(form)
		if err != nil {
			return
		}
		s := sess(project, labels)
		c := sel.Complement()
		if sel.Selects(s) == c.Selects(s) {
			t.Fatalf("%v and %v both say %v for project %q labels %q", sel, c, sel.Selects(s), project, labels)
		}
		if c.Complement().Selects(s) != sel.Selects(s) {
			t.Fatalf("double complement of %v differs", sel)
		}
		if again, err := session.ParseSelector(sel.String()); err != nil || again.Selects(s) != sel.Selects(s) {
			t.Fatalf("%v does not round-trip: %v, %v", sel, again, err)
		}
	})
}

func TestComplementString(t *testing.T) {
	t.Parallel()
	sel, err := session.NewSelector([]string{"a", "b"}, "run=local")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sel.Complement().String(), "not (projects=a,b label=run=local)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}
