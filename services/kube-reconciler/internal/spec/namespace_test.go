package spec

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// TestProjectNamespace: the namespace comes from the id, with the id's
// kubelabel.ProjectKey (lower-cased, like the name) as the ownership label, so ids
// differing only in case name one namespace with one owner; an id that is
// no namespace name (or label value) is refused as a field.
func TestProjectNamespace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id, want string
		ok       bool
	}{
		{"p1", "p1", true},
		{"Proj", "proj", true},
		{"kube-system", "kube-system", true}, // a name; the deny-list refuses it
		{"", "", false},
		{"a.b", "", false},
		{"\u212Aafka", "", false}, // Kelvin sign: lower-cases to "kafka", but is no label value
	}
	for _, tc := range tests {
		got, err := ProjectNamespace(tc.id)
		if (err == nil) != tc.ok || got.Name != tc.want {
			t.Errorf("ProjectNamespace(%q) = %q, %v; want %q ok=%v", tc.id, got.Name, err, tc.want, tc.ok)
			continue
		}
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "project_id" {
				t.Errorf("ProjectNamespace(%q) error %v, want a project_id *FieldError", tc.id, err)
			}
			continue
		}
		if got.Labels[LabelProjectID] != tc.want || !OwnedBy(got.Labels, tc.id) || !OwnedBy(got.Labels, tc.want) {
			t.Errorf("ProjectNamespace(%q) labels %v, want owned by %q and %q alike", tc.id, got.Labels, tc.id, tc.want)
		}
	}
}

func TestOwnedBy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"ours", ManagedLabels("p"), true},
		{"managed flag flipped is still ours", map[string]string{LabelManaged: "false", LabelManagedBy: ManagedByValue, LabelProjectID: "p"}, true},
		{"ours, exact-case label of releases before kubelabel.ProjectKey", map[string]string{LabelManagedBy: ManagedByValue, LabelProjectID: "P"}, true},
		{"another project", ManagedLabels("q"), false},
		{"someone else's", map[string]string{"team": "x"}, false},
		{"project label without managed-by", map[string]string{LabelProjectID: "p"}, false},
		{"no labels", nil, false},
	}
	for _, tc := range tests {
		if got := OwnedBy(tc.labels, "p"); got != tc.want {
			t.Errorf("%s: OwnedBy = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestProjectSelector selects exactly one project's managed objects.
func TestProjectSelector(t *testing.T) {
	t.Parallel()
	sel, err := labels.Parse(ProjectSelector("p"))
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(ManagedLabels("p"))) || !sel.Matches(labels.Set(ManagedLabels("P"))) {
		t.Error("selector misses the project's own objects")
	}
	if upper, err := labels.Parse(ProjectSelector("P")); err != nil || upper.String() != sel.String() {
		t.Errorf("ProjectSelector(%q) = %v, %v; want the selector of %q", "P", upper, err, "p")
	}
	for _, other := range []map[string]string{ManagedLabels("q"), {LabelProjectID: "p"}, {LabelManagedBy: ManagedByValue}} {
		if sel.Matches(labels.Set(other)) {
			t.Errorf("selector matches %v", other)
		}
	}
}

func TestDenyList(t *testing.T) {
	t.Parallel()
	d := DenyList{"kube-*", "default", "openshift*", "ambient-code"}
	tests := []struct {
		ns, pattern string
	}{
		{"kube-system", "kube-*"},
		{"kube-public", "kube-*"},
		{"default", "default"},
		{"openshift", "openshift*"},
		{"openshift-monitoring", "openshift*"},
		{"ambient-code", "ambient-code"},
		{"kube", ""},
		{"defaults", ""},
		{"my-kube-system", ""},
		{"p1", ""},
	}
	for _, tc := range tests {
		got, ok := d.Match(tc.ns)
		if got != tc.pattern || ok != (tc.pattern != "") {
			t.Errorf("Match(%q) = %q, %v; want %q", tc.ns, got, ok, tc.pattern)
		}
	}
	if _, ok := (DenyList{"kube-["}).Match("kube-["); ok {
		t.Error("a malformed pattern matched")
	}

}
