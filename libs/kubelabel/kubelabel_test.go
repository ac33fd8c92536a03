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
