package proc

import (
	"maps"
	"os"
	"slices"
)

// Env is this process's environment with vars on top: a child inherits
// everything the user's shell set (OTEL_*, proxies) and the service's own
// variables override it (later duplicates win in os/exec). vars are added
// in name order so the environment is the same on every run.
func Env(vars map[string]string) []string {
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return env
}
