package kubelabel_test

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/kubelabel"
)

// TestProjectKey: ids differing only in case share a key; a real project
// id (a DNS-1123 label) is its own key.
func TestProjectKey(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]string{"future": "future", "Future": "future", "FUTURE-2": "future-2", "": ""} {
		if got := kubelabel.ProjectKey(id); got != want {
			t.Errorf("ProjectKey(%q) = %q, want %q", id, got, want)
		}
	}
}

// TestNamespaceOfInstance: a namespace labelled for the installation, or
// not labelled for any, is its; one labelled for another (even empty) is
// not.
func TestNamespaceOfInstance(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{kubelabel.Instance: "green"}, true},
		{map[string]string{kubelabel.ProjectID: "team-a"}, true},
		{nil, true},
		{map[string]string{kubelabel.Instance: "blue"}, false},
		{map[string]string{kubelabel.Instance: ""}, false},
	} {
		if got := kubelabel.NamespaceOfInstance(c.labels, "green"); got != c.want {
			t.Errorf("NamespaceOfInstance(%v, green) = %v, want %v", c.labels, got, c.want)
		}
	}
}
