package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// supervised runs one service as a child process and restarts it when it
// exits on its own (a crash or kill -9), so the stack converges the way a
// Deployment would. It is safe for concurrent use.
type supervised struct {
	svc    service
	cfg    Config
	logs   *logWriter
	pidDir string

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd

	started chan struct{} // closed after the first successful start
	once    sync.Once
}

func (s *supervised) env() []string {
	env := os.Environ()
	keys := make([]string, 0, len(s.svc.env))
	for k := range s.svc.env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Later duplicates win in os/exec, so these override the user's shell.
	for _, k := range keys {
		env = append(env, k+"="+s.svc.env[k])
	}
	return env
}

func (s *supervised) start() error {
	path := filepath.Join(s.cfg.BinDir, s.svc.binary)
	cmd := exec.Command(path, s.svc.args...)
	cmd.Env = s.env()
	out := s.logs.prefixed(s.svc.name)
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: Ctrl-C reaches only devstack, which then stops the
	// services in order. Pdeathsig stops a child if devstack itself dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s (%s): %w", s.svc.name, path, err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	if err := writePIDFile(filepath.Join(s.pidDir, s.svc.name+".pid"), cmd.Process.Pid); err != nil {
		return err
	}
	s.once.Do(func() { close(s.started) })
	return nil
}

// run starts the child and restarts it after unexpected exits until ctx ends.
// It returns after the last child has exited.
func (s *supervised) run(ctx context.Context, log io.Writer) error {
	backoff := time.Second
	for {
		if err := s.start(); err != nil {
			return err
		}
		begun := time.Now()
		err := s.current().Wait()
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(begun) > time.Minute {
			backoff = time.Second
		}
		fmt.Fprintf(log, "devstack: %s exited (%v); restarting in %s\n", s.svc.name, exitText(err), backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (s *supervised) current() *exec.Cmd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd
}

// stop sends SIGTERM to the child's process group and SIGKILL after grace.
// done is closed when run has returned.
func (s *supervised) stop(grace time.Duration, done <-chan struct{}) {
	cmd := s.current()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return
	}
	select {
	case <-done:
	case <-time.After(grace):
		// The group is gone once the child exits; ESRCH is the normal case.
		_ = syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck // best effort after the grace period
		<-done
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// writePIDFile replaces path atomically (temp file + rename): a reader
// during a restart sees the old pid or the new one, never an empty file.
func writePIDFile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
