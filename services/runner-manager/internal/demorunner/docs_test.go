package demorunner

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestEveryVariableIsDocumented fails when the demo runner reads a variable
// that docs/configuration.md does not list under "## demo-runner".
func TestEveryVariableIsDocumented(t *testing.T) {
	testenv.RequireDocumented(t, "../../../../docs/configuration.md", "## demo-runner", func(lookup envconfig.LookupFunc) {
		_, _ = FromEnv(func(name string) string {
			v, _ := lookup(name)
			return v
		})
	})
}
