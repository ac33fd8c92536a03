package chaos

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// flagLine matches a flag in the flag package's usage output ("  -name ...").
var flagLine = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9-]*)`)

// TestEveryFlagIsDocumented fails when chaos has a flag that
// docs/configuration.md does not list as `--name` under "## chaos".
func TestEveryFlagIsDocumented(t *testing.T) {
	var usage bytes.Buffer
	if _, err := ParseFlags([]string{"-h"}, &usage); err == nil {
		t.Fatal("ParseFlags -h: want the help error")
	}
	flags := flagLine.FindAllStringSubmatch(usage.String(), -1)
	if len(flags) < 20 {
		t.Fatalf("found %d flags in the usage text, want every flag:\n%s", len(flags), usage.String())
	}
	testenv.RequireDocumented(t, "../../../../docs/configuration.md", "## chaos", func(lookup envconfig.LookupFunc) {
		for _, f := range flags {
			lookup("--" + f[1])
		}
	})
}
