package config_test

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/config"
)

// TestEveryVariableIsDocumented fails when the loader reads a variable that
// docs/configuration.md does not list under "## runner-manager".
func TestEveryVariableIsDocumented(t *testing.T) {
	testenv.RequireDocumented(t, "../../../../docs/configuration.md", "## runner-manager", func(lookup envconfig.LookupFunc) {
		_, _ = config.Load(lookup, nil) // required variables are missing on purpose
	})
}
