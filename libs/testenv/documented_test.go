package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// errRecorder captures Errorf calls so a test can check what
// RequireDocumented reports without failing itself.
type errRecorder struct {
	testing.TB
	errs []string
}

func (r *errRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

const sampleDoc = "# Configuration\n\n" +
	"## alpha\n\n" +
	"| variable | default |\n|---|---|\n| `A_ONE` | x |\n\n" +
	"### details\n\n`A_TWO` lives in a subsection.\n\n" +
	"```sh\n## not a heading inside a fence\n```\n\n`A_THREE` after the fence.\n\n" +
	"## beta\n\n`B_ONE` and `A_FOUR` (documented in the wrong section), A_FIVE without backticks.\n"

func TestRequireDocumented(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "configuration.md")
	if err := os.WriteFile(doc, []byte(sampleDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		heading string
		vars    []string
		missing []string // names each error must mention, in order
	}{
		{name: "all documented incl. subsection and after a fence", heading: "## alpha", vars: []string{"A_ONE", "A_TWO", "A_THREE", "A_ONE"}},
		{name: "in another section", heading: "## alpha", vars: []string{"A_ONE", "A_FOUR"}, missing: []string{"A_FOUR"}},
		{name: "without backticks", heading: "## beta", vars: []string{"B_ONE", "A_FIVE"}, missing: []string{"A_FIVE"}},
		{name: "section ends at the next heading", heading: "## beta", vars: []string{"A_ONE"}, missing: []string{"A_ONE"}},
		{name: "no such heading", heading: "## gamma", vars: []string{"A_ONE"}, missing: []string{"## gamma"}},
		{name: "heading level must match", heading: "# alpha", vars: []string{"A_ONE"}, missing: []string{"# alpha"}},
		{name: "load asked nothing", heading: "## alpha", missing: []string{"no variables"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &errRecorder{TB: t}
			RequireDocumented(rec, doc, tt.heading, func(lookup envconfig.LookupFunc) {
				for _, v := range tt.vars {
					if val, ok := lookup(v); ok || val != "" {
						t.Errorf("lookup(%q) = %q, %v; want unset", v, val, ok)
					}
				}
			})
			if len(rec.errs) != len(tt.missing) {
				t.Fatalf("got %d errors %q, want %d mentioning %q", len(rec.errs), rec.errs, len(tt.missing), tt.missing)
			}
			for i, want := range tt.missing {
				if !strings.Contains(rec.errs[i], want) || !strings.Contains(rec.errs[i], doc) {
					t.Errorf("error %q does not name %q and the doc", rec.errs[i], want)
				}
			}
		})
	}
}

func TestRequireDocumentedWithLoader(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "c.md")
	if err := os.WriteFile(doc, []byte("## svc\n\n`X_ADDR`, `X_TOKEN`, `X_TOKEN_FILE`\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	RequireDocumented(t, doc, "## svc", func(lookup envconfig.LookupFunc) {
		l := envconfig.New(lookup)
		_ = l.HostPort("X_ADDR", ":1")
		_ = l.RequiredSecret("X_TOKEN")
		if l.Err() == nil {
			t.Error("X_TOKEN should be missing")
		}
	})
}

func TestMissingDocFile(t *testing.T) {
	rec := &errRecorder{TB: t}
	RequireDocumented(rec, filepath.Join(t.TempDir(), "nope.md"), "## x", func(lookup envconfig.LookupFunc) { lookup("A") })
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "nope.md") {
		t.Fatalf("errors %q, want one naming the file", rec.errs)
	}
}
