package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// reapEvery is how often the reaper looks for orphans without a SIGCHLD
// (a signal can coalesce with another or arrive during a scan).
const reapEvery = 5 * time.Second

// killRounds bounds the scans that kill a session's escaped processes:
// killing one can reparent its children, which the next scan finds.
const killRounds = 10

// Reaper makes runner-manager the child subreaper of every process its
// runners start (prctl PR_SET_CHILD_SUBREAPER): a runner's descendant
// that escapes its process group (setsid, a double fork) is reparented
// to runner-manager instead of to init when its parent exits. In a
// container runner-manager is PID 1 and nothing else would reap them.
// The Reaper then
//
//   - reaps every orphan that exits (a zombie child that is not one of
//     the runners the Manager waits for itself), and
//   - kills a session's escaped processes when its runner ends
//     ([Reaper.KillSession]): every descendant of runner-manager whose
//     environment says SESSION_ID=<the session>.
//
// What it cannot catch: a process that cleared its environment (env -i)
// or made itself non-dumpable (its /proc environ is unreadable to a
// non-root runner-manager) escapes the session kill; it is still reaped
// when it exits and dies with the container. Safe for concurrent use.
type Reaper struct {
	self int
	log  *slog.Logger

	// mu orders spawns and reaps: a spawn holds it shared from fork until
	// the child is tracked, a reap scan holds it exclusively, so a runner
	// that exits at once is never reaped here (its exec.Cmd.Wait would
	// fail with ECHILD).
	mu      sync.RWMutex
	tracked map[int]bool // guarded by trackMu; runner pids whose exec.Cmd waits for them
	trackMu sync.Mutex

	scans *procScanner // every scan of the process table goes through it

	// kill sends a signal: unix.Kill, replaced in tests to hold a
	// SIGKILL back the way a loaded kernel does before the process dies.
	kill func(pid int, sig unix.Signal) error
}

// NewReaper makes this process a child subreaper. It returns the prctl
// error where the kernel refuses.
func NewReaper(log *slog.Logger) (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	return &Reaper{self: os.Getpid(), log: log, tracked: map[int]bool{}, scans: newProcScanner(procs), kill: unix.Kill}, nil
}

// spawn runs start (a fork and exec) and tracks the pid it returns until
// untrack; no reap scan runs meanwhile.
func (r *Reaper) spawn(start func() (int, error)) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	pid, err := start()
	if err != nil {
		return err
	}
	r.trackMu.Lock()
	r.tracked[pid] = true
	r.trackMu.Unlock()
	return nil
}

// untrack stops protecting pid, once its exec.Cmd has reaped it.
func (r *Reaper) untrack(pid int) {
	r.trackMu.Lock()
	delete(r.tracked, pid)
	r.trackMu.Unlock()
}

func (r *Reaper) isTracked(pid int) bool {
	r.trackMu.Lock()
	defer r.trackMu.Unlock()
	return r.tracked[pid]
}

// Run reaps orphans on every SIGCHLD (and every reapEvery) until ctx
// ends; then it returns nil.
func (r *Reaper) Run(ctx context.Context) error {
	sig := make(chan os.Signal, 1) // signal.Notify needs a buffer; one pending SIGCHLD is enough
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		r.Reap()
		select {
		case <-ctx.Done():
			return nil
		case <-sig:
		case <-t.C:
		}
	}
}

// Reap reaps every exited orphan (a zombie child of this process that no
// exec.Cmd waits for) and returns how many.
func (r *Reaper) Reap() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	// Taken while mu is held, so no runner is between its fork and its
	// tracking during the scan.
	for _, p := range r.scans.snapshot() {
		if p.ppid != r.self || p.state != 'Z' || r.isTracked(p.pid) {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(p.pid, &ws, unix.WNOHANG, nil); err == nil && got == p.pid {
			n++
			r.log.Debug("orphan reaped", slog.Int(logkey.PID, p.pid))
		}
	}
	return n
}

// KillSession kills (SIGKILL) every descendant of this process that
// carries SESSION_ID=id in its environment and is not a tracked runner,
// scanning again while it finds some (a killed process's children are
// reparented here). It returns how many it killed.
func (r *Reaper) KillSession(id string) int {
	marker := EnvSessionID + "=" + id
	// A process stays in the table, alive, from its SIGKILL until the
	// kernel runs its exit, which on a loaded node can be after the next
	// scan: signalled holds what was already killed, so it is neither
	// killed nor counted again.
	signalled := map[int]bool{}
	killed := 0
	for range killRounds {
		n := r.killEscaped(signalled, func(pid int) bool {
			p, err := procfs.NewProc(pid)
			if err != nil {
				return false // exited meanwhile
			}
			env, err := p.Environ() // its initial environment
			return err == nil && slices.Contains(env, marker)
		})
		killed += n
		if n == 0 {
			break
		}
	}
	if killed > 0 {
		r.log.Info("escaped runner processes killed", slog.String(logkey.SessionID, id), slog.Int(logkey.Count, killed))
	}
	return killed
}

// killEscaped kills (SIGKILL) the live descendants of this process in a
// fresh snapshot that are not tracked runners, not in signalled and that
// match accepts (nil: all of them), adds them to signalled and returns how
// many.
func (r *Reaper) killEscaped(signalled map[int]bool, accept func(pid int) bool) int {
	all := r.scans.snapshot()
	parent := make(map[int]int, len(all))
	for _, p := range all {
		parent[p.pid] = p.ppid
	}
	n := 0
	for _, p := range all {
		if p.state == 'Z' || signalled[p.pid] || r.isTracked(p.pid) || !descends(parent, p.pid, r.self) {
			continue
		}
		if accept != nil && !accept(p.pid) {
			continue
		}
		if err := r.kill(p.pid, unix.SIGKILL); err == nil {
			signalled[p.pid] = true
			n++
		}
	}
	return n
}

// descends reports whether pid is a descendant of root in the parent map.
func descends(parent map[int]int, pid, root int) bool {
	for range 64 { // deeper process trees are not runners'
		pp, ok := parent[pid]
		if !ok || pp <= 1 {
			return false
		}
		if pp == root {
			return true
		}
		pid = pp
	}
	return false
}

// proc is one line of the process table.
type proc struct {
	pid, ppid int
	state     byte
}

// procs reads pid, parent and state of every process from /proc; a
// process that exits while it is read is skipped.
func procs() []proc {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	out := make([]proc, 0, len(all))
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || len(st.State) != 1 {
			continue // ended meanwhile
		}
		out = append(out, proc{pid: st.PID, ppid: st.PPID, state: st.State[0]})
	}
	return out
}

// descendantsGoneWait bounds KillDescendants' wait for the processes it
// killed to be gone.
const descendantsGoneWait = 5 * time.Second

// KillDescendants kills (SIGKILL) every descendant of this process that
// is not a tracked runner: at shutdown, after the runners exited, what is
// left escaped them without a session marker. It scans again while it
// finds some (a killed process's children are reparented here), and
// returns once every process it killed is gone (or a zombie), at most
// descendantsGoneWait later: runner-manager exits next, and a SIGKILL
// takes effect only when the kernel runs the process's exit, which on a
// loaded node comes after the signal's return (seen: two escaped shells
// still running when the service had exited).
func (r *Reaper) KillDescendants() int {
	signalled := map[int]bool{}
	killed := 0
	for range killRounds {
		n := r.killEscaped(signalled, nil)
		killed += n
		if n == 0 {
			break
		}
	}
	if killed == 0 {
		return 0
	}
	gone := pollUntil(context.Background(), descendantsGoneWait, func() bool {
		for pid := range signalled {
			if processLives(pid) {
				return false
			}
		}
		return true
	})
	if !gone {
		r.log.Warn("escaped runner processes killed at shutdown still run", slog.Int(logkey.Count, killed), slog.Duration(logkey.Duration, descendantsGoneWait))
	}
	r.log.Info("escaped runner processes killed at shutdown", slog.Int(logkey.Count, killed))
	return killed
}

// processLives reports whether pid names a live process (not a zombie).
func processLives(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z"
}
