package config_test

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
)

// TestEveryVariableIsDocumented fails when the loader reads a variable that
// docs/configuration.md does not list under "## kube-reconciler".
func TestEveryVariableIsDocumented(t *testing.T) {
	testenv.RequireDocumented(t, "../../../../docs/configuration.md", "## kube-reconciler", func(lookup envconfig.LookupFunc) {
		_, _ = config.Load(lookup) // required variables are missing on purpose
	})
}
