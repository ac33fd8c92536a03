package cli

import (
	"io"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestEveryVariableIsDocumented fails when ambientctl reads an environment
// variable that docs/configuration.md does not list under "## ambientctl".
func TestEveryVariableIsDocumented(t *testing.T) {
	testenv.RequireDocumented(t, "../../../../docs/configuration.md", "## ambientctl", func(lookup envconfig.LookupFunc) {
		// --help builds every flag (each reads its variable) and runs nothing.
		if code := Execute(t.Context(), []string{"--help"}, io.Discard, io.Discard, LookupEnv(lookup)); code != 0 {
			t.Errorf("ambientctl --help exited %d", code)
		}
	})
}
