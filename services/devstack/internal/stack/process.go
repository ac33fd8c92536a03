package stack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"

	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// maxStartExits is how many times a service may exit before it first became
// ready until the start-up gives up on it: a service that fails at start
// (a bad setting, a taken port) fails the same way on every restart, and
// waiting out --ready-timeout would only repeat its error.
const maxStartExits = 3

// supervised is one service of the stack run as a child process that is
// restarted when it exits on its own (a crash or kill -9), so the stack
// converges the way a Deployment would.
type supervised struct {
	svc  service
	proc *proc.Process
	out  *lineWriter // the child's output, prefixed with its name

	mu    sync.Mutex // guards exits and last
	exits int        // exits on its own since devstack started it
	last  proc.Exit  // the latest of them
}

func newSupervised(svc service, cfg Config, logs *logWriter, pidDir string, log io.Writer) *supervised {
	s := &supervised{svc: svc, out: logs.prefixed(svc.name)}
	s.proc = proc.New(proc.Spec{
		Name:    svc.name,
		Path:    filepath.Join(cfg.BinDir, svc.binary),
		Args:    svc.args,
		Env:     proc.Env(svc.env),
		Out:     s.out,
		PIDFile: filepath.Join(pidDir, svc.name+".pid"),
		OnExit: func(e proc.Exit) {
			// Run has waited for the child, so its output is all in: its
			// last line shows before the exit, not glued to the next run's.
			s.out.flush()
			s.mu.Lock()
			s.exits++
			s.last = e
			s.mu.Unlock()
			fmt.Fprintf(log, "devstack: %s exited (%v); restarting in %s\n", svc.name, proc.ExitText(e.Err), e.Restart)
		},
	})
	return s
}

// run supervises the child until ctx is done (see proc.Process.Run). An
// exit while stopping gets no OnExit: the last line is flushed here.
func (s *supervised) run(ctx context.Context) error {
	defer s.out.flush()
	return s.proc.Run(ctx)
}

// readyProbe is the service's readiness probe during start-up. When the
// service has exited, its error says how often and how, which tells more
// than the refused connection; after maxStartExits exits it wraps
// proc.ErrWillNotBeReady, so the start-up fails now and not after
// --ready-timeout.
func (s *supervised) readyProbe(client *http.Client, token string) proc.Probe {
	probe := proc.HTTPProbe(client, s.svc.readyURL, token)
	return func(ctx context.Context) error {
		err := probe(ctx)
		if err == nil {
			return nil
		}
		s.mu.Lock()
		exits, last := s.exits, s.last
		s.mu.Unlock()
		switch {
		case exits >= maxStartExits:
			return fmt.Errorf("%w: it exited %d times, the last time with %s (its output is above, lines prefixed %q)",
				proc.ErrWillNotBeReady, exits, proc.ExitText(last.Err), s.svc.name+" |")
		case exits > 0:
			return fmt.Errorf("%w (it exited %d times, the last time with %s)", err, exits, proc.ExitText(last.Err))
		default:
			return err
		}
	}
}
