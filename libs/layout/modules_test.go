package layout

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// servicePrefix is the module path prefix of every service module.
const servicePrefix = "github.com/ambient-code/control-plane/services/"

// goMod is the part of `go mod edit -json` this test reads.
type goMod struct {
	Module  struct{ Path string }
	Require []struct{ Path string }
	Replace []struct{ Old struct{ Path string } }
}

// serviceEdges returns the service modules the go.mod at path requires or
// replaces, sorted, without duplicates. It reads the file with the go
// command itself, so the go.mod grammar is never re-implemented here.
func serviceEdges(t *testing.T, path string) (module string, edges []string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "mod", "edit", "-json", path).Output()
	if err != nil {
		t.Fatalf("go mod edit -json %s: %v", path, err)
	}
	var m goMod
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	for _, r := range m.Require {
		if strings.HasPrefix(r.Path, servicePrefix) {
			edges = append(edges, r.Path)
		}
	}
	for _, r := range m.Replace {
		if strings.HasPrefix(r.Old.Path, servicePrefix) {
			edges = append(edges, r.Old.Path)
		}
	}
	slices.Sort(edges)
	return m.Module.Path, slices.Compact(edges)
}

// TestNoServiceRequiresAnotherService fails when a services/*/go.mod
// requires or replaces another service module: a service's tests or code
// reaching into another service couple their releases (issue 13).
func TestNoServiceRequiresAnotherService(t *testing.T) {
	mods, err := filepath.Glob("../../services/*/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) < 5 {
		t.Fatalf("found %d service modules under ../../services, want the five services and more: wrong directory?", len(mods))
	}
	for _, path := range mods {
		module, edges := serviceEdges(t, path)
		if !strings.HasPrefix(module, servicePrefix) {
			t.Errorf("%s: module %q is not under %s", path, module, servicePrefix)
		}
		if len(edges) > 0 {
			t.Errorf("%s requires or replaces other service modules %v; share the code through libs instead", path, edges)
		}
	}
}

// TestServiceEdgesFindsOne proves the check above can fail: a go.mod that
// requires and replaces another service is reported.
func TestServiceEdgesFindsOne(t *testing.T) {
	_, edges := serviceEdges(t, "testdata/coupled.go.mod")
	want := []string{servicePrefix + "event-tally"}
	if !slices.Equal(edges, want) {
		t.Fatalf("edges = %v, want %v", edges, want)
	}
}
