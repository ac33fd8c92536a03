package stack

import (
	"fmt"
	"io"
	"path/filepath"

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
		Env:     proc.Env(svc.env),
		Out:     logs.prefixed(svc.name),
		PIDFile: filepath.Join(pidDir, svc.name+".pid"),
		OnExit: func(e proc.Exit) {
			fmt.Fprintf(log, "devstack: %s exited (%v); restarting in %s\n", svc.name, proc.ExitText(e.Err), e.Restart)
		},
	})}
}
