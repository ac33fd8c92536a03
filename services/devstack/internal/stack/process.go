package stack

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// supervised is one service of the stack run as a child process that is
// restarted when it exits on its own (a crash or kill -9), so the stack
// converges the way a Deployment would.
type supervised struct {
	svc  service
	proc *proc.Process
}

func newSupervised(svc service, cfg Config, logs *logWriter, pidDir string, log io.Writer) *supervised {
	return &supervised{svc: svc, proc: proc.New(proc.Spec{
		Name:    svc.name,
		Path:    filepath.Join(cfg.BinDir, svc.binary),
		Args:    svc.args,
		Env:     serviceEnv(svc.env),
		Out:     logs.prefixed(svc.name),
		PIDFile: filepath.Join(pidDir, svc.name+".pid"),
		OnExit: func(e proc.Exit) {
			fmt.Fprintf(log, "devstack: %s exited (%v); restarting in %s\n", svc.name, proc.ExitText(e.Err), e.Restart)
		},
	})}
}

// serviceEnv is devstack's environment with the service's variables on top.
func serviceEnv(vars map[string]string) []string {
	env := os.Environ()
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Later duplicates win in os/exec, so these override the user's shell.
	for _, k := range keys {
		env = append(env, k+"="+vars[k])
	}
	return env
}
