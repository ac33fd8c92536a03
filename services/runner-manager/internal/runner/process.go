package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Log file names inside a workspace.
const (
	StdoutLog = "stdout.log"
	StderrLog = "stderr.log"
)

// ExitStatus says how a runner process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was killed by a signal.
	Code int
	// Signal is the signal that ended the process ("" if it exited).
	Signal string
	// StopRequested is true when the manager asked the process to stop.
	StopRequested bool
	// StderrTail holds the last lines of stderr.log.
	StderrTail []string
}

// Process is one running runner. Its fields are fixed after start; methods are
// safe for concurrent use.
type Process struct {
	SessionID string
	PID       int
	Port      int
	Workspace string
	StartedAt time.Time
	// StartTicks is the leader's start time in clock ticks since boot
	// (/proc/<pid>/stat field 22; 0 where unknown): recorded with the pid
	// so that a later incarnation of runner-manager can tell this runner's
	// group from a recycled pid (LostGroup).
	StartTicks uint64

	tailLines int
	reaper    *Reaper       // nil: no subreaper
	done      chan struct{} // closed by the waiter after exit is set
	// killed is closed once the group has been sent SIGKILL by Stop or
	// Kill: the waiter stops waiting for the group to drain.
	killed   chan struct{}
	killOnce sync.Once

	mu            sync.Mutex
	exit          ExitStatus // guarded by mu; final once done is closed
	stopRequested bool       // guarded by mu
	exited        bool       // guarded by mu; exit is set
	// releasePort gives Port back to the pool (nil once done, or when
	// nothing is to be given back). It runs once the process has exited
	// and ReleasePort was called (portWanted), whichever comes last.
	// Guarded by mu.
	releasePort func()
	portWanted  bool // guarded by mu
}

// ReleasePort gives the runner's port back to the pool: at once if the
// runner has exited, else when it exits. The port is not given back at
// the exit on its own: callers release it once nothing names it any more
// (runner-manager: once the session's registry record no longer routes
// to host:port, so that no other session's runner gets a port a client
// of this session is still sent to). Idempotent.
func (p *Process) ReleasePort() {
	p.mu.Lock()
	p.portWanted = true
	release := p.takePortRelease()
	p.mu.Unlock()
	if release != nil {
		release()
	}
}

// takePortRelease returns releasePort, once, if the port may go back now.
// Callers hold mu.
func (p *Process) takePortRelease() func() {
	if !p.exited || !p.portWanted {
		return nil
	}
	release := p.releasePort
	p.releasePort = nil
	return release
}

// groupPoll is how often a stopping process group is checked for members
// once its leader has exited: nothing else tells when the leader's
// children end (they are not runner-manager's children to wait for).
const groupPoll = 20 * time.Millisecond

// Done is closed when the process has exited and its group is empty
// (after a stop: the group ended in its grace, or was killed at its end).
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit returns the exit status; only meaningful after Done is closed.
func (p *Process) Exit() ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// StopRequested reports whether Stop or Kill was called.
func (p *Process) StopRequested() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopRequested
}

func (p *Process) markStop() {
	p.mu.Lock()
	p.stopRequested = true
	p.mu.Unlock()
}

// signalGroup sends sig to the process group. ESRCH (already gone) is not an
// error.
func (p *Process) signalGroup(sig syscall.Signal) error {
	if err := syscall.Kill(-p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, p.PID, err)
	}
	return nil
}

// Stop sends SIGTERM to the process group and SIGKILL after grace, then waits
// for the exit (or ctx). The grace is the whole group's, not the leader's:
// a child still handling its SIGTERM when the leader exits gets the rest of
// it. It returns nil once the process has exited and its group is empty.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	p.markStop()
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.signalGroup(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	if err := p.killGroup(); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop runner %s: %w", p.SessionID, ctx.Err())
	}
}

// Kill sends SIGKILL to the process group without waiting.
func (p *Process) Kill() error {
	p.markStop()
	return p.killGroup()
}

// killGroup sends SIGKILL to the process group and tells the waiter, which
// may be waiting for the group to drain, that nothing is left to wait for.
func (p *Process) killGroup() error {
	err := p.signalGroup(syscall.SIGKILL)
	p.killOnce.Do(func() { close(p.killed) })
	return err
}

// groupEmpty reports whether no process is left in the process group
// (kill(-pgid, 0) fails with ESRCH). A member that exited but is not yet
// reaped (a zombie, until the subreaper or init reaps it) still counts.
func (p *Process) groupEmpty() bool {
	return errors.Is(syscall.Kill(-p.PID, 0), syscall.ESRCH)
}

// drainGroup runs once the leader has exited. After a stop request the
// group's other members keep the rest of the grace to finish their own
// SIGTERM handling: it waits until the group is empty or Stop (at the end
// of the grace) or Kill sent SIGKILL. A runner that exited on its own
// takes what it left behind with it at once.
func (p *Process) drainGroup() {
	if !p.StopRequested() {
		_ = p.signalGroup(syscall.SIGKILL) // best effort; ESRCH when none are left
		return
	}
	t := time.NewTicker(groupPoll)
	defer t.Stop()
	for !p.groupEmpty() {
		select {
		case <-p.killed:
			return
		case <-t.C:
		}
	}
}

// spawn starts argv in workspace with env; stdout and stderr go to log files
// in the workspace. The returned cmd has been started.
func spawn(ctx context.Context, argv []string, workspace string, env []string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrSpawn)
	}
	stdout, err := os.OpenFile(filepath.Join(workspace, StdoutLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	defer closeQuietly(stdout) // the child has its own descriptor after Start
	stderr, err := os.OpenFile(filepath.Join(workspace, StderrLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	defer closeQuietly(stderr)
	// The runner outlives the request that started it: keep ctx's values,
	// never its cancellation (Stop and Kill end the process).
	cmd := exec.CommandContext(context.WithoutCancel(ctx), argv[0], argv[1:]...)
	cmd.Dir = workspace
	cmd.Env = env
	cmd.Stdin = nil
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	return cmd, nil
}

func closeQuietly(c io.Closer) {
	// The parent's copy of a log file: the child keeps writing through its own.
	_ = c.Close()
}

// wait reaps the process, kills whatever is left in its group and, with a
// subreaper, whatever of the session escaped the group (no orphans),
// records the exit status, calls exited (the manager frees the session's
// slot) and closes done: whoever waits on Done finds the slot free and a
// port released early back in the pool.
func (p *Process) wait(cmd *exec.Cmd, exited func()) {
	err := cmd.Wait()
	if p.reaper != nil {
		p.reaper.untrack(p.PID)
	}
	p.drainGroup()
	if p.reaper != nil {
		p.reaper.KillSession(p.SessionID)
	}
	st := ExitStatus{Code: -1}
	if ps := cmd.ProcessState; ps != nil {
		st.Code = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = ws.Signal().String()
		}
	} else if err != nil {
		st.Signal = err.Error()
	}
	st.StderrTail = tailLines(filepath.Join(p.Workspace, StderrLog), p.tailLines)
	p.mu.Lock()
	st.StopRequested = p.stopRequested
	p.exit = st
	p.exited = true
	release := p.takePortRelease()
	p.mu.Unlock()
	exited()
	if release != nil {
		release() // ReleasePort was called before the exit
	}
	// Last: a supervisor that starts waiting sessions once a runner is done
	// must find its slot and port free (TestCapacity and
	// TestPortHeldUntilReleased failed now and then when done was closed
	// first).
	close(p.done)
}

// tailLines returns the last n lines of a file (reading at most its last
// 64 KiB); a missing file yields nil.
func tailLines(path string, n int) []string {
	const maxRead = 64 << 10
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer closeQuietly(f)
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(fi.Size()-maxRead, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	text := strings.TrimRight(string(buf), "\n")
	if text == "" {
		return nil
	}
	lines := strings.Split(text, "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first line was cut
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
