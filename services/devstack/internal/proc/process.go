// Package proc runs child processes the way a Deployment runs pods: each in
// its own process group, stopped with its parent (Pdeathsig), restarted with
// a growing delay after it exits on its own, and, for fault injection, held
// down on purpose (Hold, then Kill or Stop, later Release). devstack (`make
// run`) and the chaos harness (`make chaos`) run every child through it.
//
// A Process is safe for concurrent use: one goroutine owns Run, others signal,
// hold and release it.
package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Restart delays used when a Spec leaves them zero: the first restart after
// 1 s, doubling up to 10 s, back to 1 s after a run longer than a minute
// (a crash loop slows down, a rare crash restarts quickly).
const (
	DefaultRestartMin = time.Second
	DefaultRestartMax = 10 * time.Second
	DefaultResetAfter = time.Minute
)

// waitDelay bounds how long Wait keeps copying output after the child
// exited: a grandchild that inherited the output pipe must not keep the
// supervisor from seeing the exit.
const waitDelay = 5 * time.Second

// Spec describes one child process.
type Spec struct {
	// Name identifies the child in errors.
	Name string
	// Path is the executable; Args its arguments (without argv[0]).
	Path string
	Args []string
	// Env is the child's whole environment, as for exec.Cmd.Env.
	Env []string
	// Dir is the working directory ("" = the parent's).
	Dir string
	// Out receives stdout and stderr (nil: discarded). An *os.File is
	// handed to the child directly; anything else goes through a pipe.
	Out io.Writer
	// PIDFile, when set, is replaced atomically with each new pid.
	PIDFile string
	// RestartMin, RestartMax and ResetAfter shape the restart delay after an
	// exit on its own (zero: the Default values).
	RestartMin, RestartMax, ResetAfter time.Duration
	// OnStart, when set, is called with the pid after every start.
	OnStart func(pid int)
	// OnExit, when set, is called after every exit that is not part of
	// stopping Run, from Run's goroutine, before the restart delay.
	OnExit func(Exit)
}

// Exit describes one exit of a child.
type Exit struct {
	PID int
	// Err is the exec error (nil: exit status 0).
	Err error
	// Ran is how long the child lived.
	Ran time.Duration
	// Held reports an exit while held: no restart until Release.
	Held bool
	// Restart is the delay before the restart (0 when Held).
	Restart time.Duration
}

// Process is one supervised child. The zero value is not usable; use New.
type Process struct {
	spec    Spec
	started chan struct{} // closed after the first successful start
	once    sync.Once

	mu      sync.Mutex
	cmd     *exec.Cmd     // guarded by mu; the current or last child
	exited  chan struct{} // guarded by mu; closed once cmd has been waited for
	held    bool          // guarded by mu
	release chan struct{} // guarded by mu; closed by Release
}

// New returns a Process for spec; it starts nothing.
func New(spec Spec) *Process {
	if spec.RestartMin <= 0 {
		spec.RestartMin = DefaultRestartMin
	}
	if spec.RestartMax < spec.RestartMin {
		spec.RestartMax = max(DefaultRestartMax, spec.RestartMin)
	}
	if spec.ResetAfter <= 0 {
		spec.ResetAfter = DefaultResetAfter
	}
	closed := make(chan struct{})
	close(closed)
	return &Process{spec: spec, started: make(chan struct{}), exited: closed, release: closed}
}

// Name is the Spec's name.
func (p *Process) Name() string { return p.spec.Name }

// Started is closed after the first successful start.
func (p *Process) Started() <-chan struct{} { return p.started }

// PID is the pid of the running child, or 0 when none runs.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

func (p *Process) start() (*exec.Cmd, chan struct{}, error) {
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Env = p.spec.Env
	cmd.Dir = p.spec.Dir
	cmd.Stdout, cmd.Stderr = p.spec.Out, p.spec.Out
	cmd.WaitDelay = waitDelay
	// Own process group: a terminal's Ctrl-C reaches only the parent, which
	// stops children in order, and a group signal reaches what the child
	// started in its group. Pdeathsig stops the child if the parent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s (%s): %w", p.spec.Name, p.spec.Path, err)
	}
	exited := make(chan struct{})
	// The pid file first, then the pid is published: whoever sees the new
	// pid (PID) finds it in the file too (TestRestartsAfterKill read the
	// old one once).
	if p.spec.PIDFile != "" {
		if err := WritePIDFile(p.spec.PIDFile, cmd.Process.Pid); err != nil {
			// The child runs; without a pid file it is still supervised.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // undoing the start; the write error is the one to report
			_ = cmd.Wait()                                      //nolint:errcheck // reaping the child killed above
			close(exited)
			return nil, nil, err
		}
	}
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	if p.spec.OnStart != nil {
		p.spec.OnStart(cmd.Process.Pid)
	}
	p.once.Do(func() { close(p.started) })
	return cmd, exited, nil
}

// Run starts the child and restarts it after every exit until ctx is done.
// A held child is restarted only on Release. Run returns after ctx is done
// and the current child has exited (stop it with Stop), or when a start
// fails.
func (p *Process) Run(ctx context.Context) error {
	delay := &backoff.ExponentialBackOff{
		InitialInterval: p.spec.RestartMin,
		Multiplier:      2,
		MaxInterval:     p.spec.RestartMax,
	}
	delay.Reset()
	for {
		if ctx.Err() != nil {
			return nil
		}
		p.mu.Lock()
		held, release := p.held, p.release
		p.mu.Unlock()
		if held {
			// Held before the first start or while waiting: start only on Release.
			select {
			case <-ctx.Done():
				return nil
			case <-release:
			}
		}
		cmd, exited, err := p.start()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			// Stopped while starting: a Stop that ran before the new child
			// was recorded did not see it, so stop it here.
			_ = p.Signal(syscall.SIGTERM) //nolint:errcheck // ESRCH-free by construction; nothing else to do
		}
		begun := time.Now()
		err = cmd.Wait()
		close(exited)
		if ctx.Err() != nil {
			return nil
		}
		ran := time.Since(begun)
		if ran > p.spec.ResetAfter {
			delay.Reset()
		}
		p.mu.Lock()
		held, release = p.held, p.release
		p.mu.Unlock()
		e := Exit{PID: cmd.Process.Pid, Err: err, Ran: ran, Held: held}
		// Exactly one of the two is set; a nil channel never fires.
		var wait <-chan time.Time
		var released <-chan struct{}
		if held {
			released = release
		} else {
			e.Restart = delay.NextBackOff()
			wait = time.After(e.Restart)
		}
		if p.spec.OnExit != nil {
			p.spec.OnExit(e)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		case <-released:
		}
	}
}

// Hold keeps the child down after its next exit until Release. It does not
// stop the child: follow it with Kill or Stop.
func (p *Process) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.held {
		p.held = true
		p.release = make(chan struct{})
	}
}

// Release ends a Hold: Run starts the child again at once.
func (p *Process) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held {
		p.held = false
		close(p.release)
	}
}

// Signal sends sig to the child's process group. It is a no-op when no
// child runs.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return nil
	default:
	}
	// The group is gone once the child exited; ESRCH is the normal race.
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.spec.Name, cmd.Process.Pid, err)
	}
	return nil
}

// Kill sends SIGKILL to the child's process group (kill -9) and waits until
// Run has seen the exit or ctx is done.
func (p *Process) Kill(ctx context.Context) error {
	exited := p.current()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill %s: %w", p.spec.Name, ctx.Err())
	}
}

// Stop sends SIGTERM to the child's process group, SIGKILL after grace or
// as soon as ctx is done (the user asked again: stop waiting), and waits
// until Run has seen the exit.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	exited := p.current()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-exited:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-exited
	return nil
}

func (p *Process) current() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// ExitText renders an exec error for a log line ("exit status 0" for nil).
func ExitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// WritePIDFile replaces path atomically (temp file + rename): a reader
// during a restart sees the old pid or the new one, never an empty file.
func WritePIDFile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
