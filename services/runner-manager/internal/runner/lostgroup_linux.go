package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// lostGroupPoll is how often a lost group is scanned while it ends; each
// scan reads every process's stat, so less often than groupPoll.
const lostGroupPoll = 100 * time.Millisecond

// lostKillWait bounds the wait for a lost group to disappear after its
// SIGKILL (the kernel runs the exits asynchronously).
const lostKillWait = 5 * time.Second

// startTicks returns the start time of process pid (/proc/<pid>/stat field
// 22, clock ticks since boot): with the pid it names one process for as
// long as the machine runs, where a pid alone is recycled.
func startTicks(pid int) (uint64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("read stat of process %d: %w", pid, err)
	}
	return st.Starttime, nil
}

// EndLostGroup ends what is left of a lost runner's process group: SIGTERM
// to the group, SIGKILL after grace to what remains, as a stop does. It
// signals only a group that provably is the runner's (see members): a pid
// recycled for an unrelated process is never signalled. ctx ending cuts
// the grace short. It returns once no process of the group runs, or an
// error when the group could not be signalled or outlived its SIGKILL.
func EndLostGroup(ctx context.Context, log *slog.Logger, g LostGroup, grace time.Duration) error {
	log = log.With(slog.Int("pgid", g.PGID))
	if g.PGID <= 1 || g.StartTicks == 0 {
		log.Warn("lost runner recorded without its start time: its process group is not signalled")
		return nil
	}
	live, foreign := g.members(nil)
	switch {
	case foreign != 0:
		log.Warn("process group of a lost runner holds processes that are not provably the runner's: not signalled",
			slog.Int("foreign_pid", foreign))
		return nil
	case len(live) == 0:
		return nil
	}
	// The processes found now are the runner's; they stay so in later
	// scans when the leader dies first (the SIGTERM below), even without
	// the session's marker (a child that cleared its environment, or one
	// forked but not yet exec'd): a process is named by its pid and start
	// time.
	seen := make(map[int]uint64, len(live))
	for _, p := range live {
		seen[p.pid] = p.start
	}
	log.Info("ending the process group of a lost runner", slog.Int(logkey.Count, len(live)))
	if err := g.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if g.wait(ctx, grace, seen) {
		return nil
	}
	// Checked again: the group may have ended and its id been recycled
	// between two scans.
	if _, foreign := g.members(seen); foreign != 0 {
		return nil
	}
	if err := g.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !g.wait(context.WithoutCancel(ctx), lostKillWait, seen) {
		return fmt.Errorf("process group %d of lost runner %s outlived SIGKILL by %v", g.PGID, g.SessionID, lostKillWait)
	}
	return nil
}

// groupProc is one process of a lost group: its pid and start time.
type groupProc struct {
	pid   int
	start uint64
}

// members returns the live processes of the group that provably belong to
// the lost runner, and a pid of one that does not (0 if none). A process
// in seen (same pid and start time: the same process) is the runner's. The leader,
// if it still runs, must have the recorded start time. Once the leader is
// gone the kernel keeps the group id reserved while any member lives, so
// the members are the runner's own; still, each must have started no
// earlier than the leader and carry the runner's SESSION_ID, so that a
// group id recycled after the runner's group emptied (whose new leader
// died too) is not taken for it. Zombies are skipped: they run nothing.
func (g LostGroup) members(seen map[int]uint64) (live []groupProc, foreign int) {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, 0
	}
	var group []procfs.Proc
	var stats []procfs.ProcStat
	leader := false // the leader runs, with the recorded start time
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || st.PGRP != g.PGID || st.State == "Z" {
			continue // ended meanwhile, another group, or nothing to end
		}
		if st.PID == g.PGID {
			if st.Starttime != g.StartTicks {
				return nil, st.PID // the id names another process now
			}
			leader = true
		}
		group, stats = append(group, p), append(stats, st)
	}
	marker := EnvSessionID + "=" + g.SessionID
	for i, st := range stats {
		start, known := seen[st.PID]
		known = known && start == st.Starttime
		if !leader && !known && !memberOf(group[i], st, g.StartTicks, marker) {
			return nil, st.PID
		}
		live = append(live, groupProc{pid: st.PID, start: st.Starttime})
	}
	return live, 0
}

// memberOf reports whether process p (stat st), in a group whose leader is
// gone, is the lost runner's: started no earlier than the leader and
// carrying its session marker.
func memberOf(p procfs.Proc, st procfs.ProcStat, leaderStart uint64, marker string) bool {
	if st.Starttime < leaderStart {
		return false
	}
	env, err := p.Environ() // unreadable (another user, non-dumpable): not provable
	return err == nil && slices.Contains(env, marker)
}

// signal sends sig to the group; ESRCH (already gone) is not an error.
func (g LostGroup) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-g.PGID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to lost process group %d: %w", sig, g.PGID, err)
	}
	return nil
}

// wait reports whether the group ended (no live process in it) within d or
// before ctx ended. A process not provably the runner's (not in seen, no
// marker) counts as live: the group has not ended while it runs in it.
func (g LostGroup) wait(ctx context.Context, d time.Duration, seen map[int]uint64) bool {
	return pollUntil(ctx, d, func() bool {
		live, foreign := g.members(seen)
		return len(live) == 0 && foreign == 0
	})
}

// pollUntil reports whether done became true within d or before ctx ended,
// checking every lostGroupPoll (each check scans the process table).
func pollUntil(ctx context.Context, d time.Duration, done func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	t := time.NewTicker(lostGroupPoll)
	defer t.Stop()
	for {
		if done() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-t.C:
		}
	}
}
