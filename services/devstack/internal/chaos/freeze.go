package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	apisession "github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// freezeLook is how long before the thaw the harness looks at what the
// frozen member still holds: the lease's holder, the group's mapping.
const freezeLook = time.Second

// freeze stops the process group of rec.Target (svcInformer: the informer
// that holds the lease now) with SIGSTOP, keeps it stopped for rec.Down,
// and resumes it with SIGCONT; then it waits until the member answers its
// readiness probe. Nothing is restarted: the process resumes where it
// stopped, with its handlers, timers and connections as they were, after
// its peers took its lease or partitions over.
//
// While a kube-reconciler is frozen, the operator writes statuses of
// AgenticSessions in its partitions (as for a kill); its peer must carry
// them to the API before the thaw. Just before the thaw it records whether
// the frozen member's lease or partitions had moved (rec.Moved): if not,
// the freeze tested nothing a kill does not.
func (in *injector) freeze(ctx context.Context, rec *faultRecord) error {
	if rec.Target == svcInformer {
		holder, err := in.nv.leaseHolder(ctx)
		if _, ok := in.sys.byName[holder]; err != nil || !ok {
			rec.Target = instanceName(svcInformer, 0)
			rec.Note = fmt.Sprintf("the lease holder unknown (%q, %v): froze %s; ", holder, err, rec.Target)
		} else {
			rec.Target = holder
			rec.Note = "the informer holding the lease; "
		}
	}
	m, ok := in.sys.byName[rec.Target]
	if !ok {
		return fmt.Errorf("no member %s", rec.Target)
	}
	pid := m.proc.PID()
	if pid == 0 {
		return fmt.Errorf("%s is not running", rec.Target)
	}
	var inDead func(string) bool
	var partErr error
	if isKubeReconciler(rec.Target) {
		// Its partitions as the mapping names them before the peer moves
		// them (MEMBER_TTL after the freeze).
		inDead, partErr = in.nv.partitionsOf(ctx, svcKubeReconciler, rec.Target)
	}
	if err := m.proc.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	rec.Down0 = time.Now()
	thawed := false
	defer func() {
		if !thawed { // an error or a cancelled run: never leave it stopped
			_ = m.proc.Signal(syscall.SIGCONT) //nolint:errcheck // best effort on the error path
		}
	}()
	thawAt := rec.Down0.Add(rec.Down)
	if isKubeReconciler(rec.Target) && in.op != nil {
		// Its own name for the values: a kill of the same replica wrote
		// "chaos-op-<target>-down-N" already, and a write of the value a
		// session holds would be carried by nobody, yet found.
		note, written := in.op.writeWhileDown(ctx, rec.Target+"-frozen", in.drv.keepKube, inDead)
		rec.Note += note
		if partErr != nil {
			rec.Note += "; " + partErr.Error()
		}
		if len(written) > 0 {
			rec.TakeoverWrites = len(written)
			missing, took := in.awaitCarried(ctx, written, thawAt.Add(-takeoverMargin))
			rec.TakenOver, rec.TakeoverTook = len(written)-len(missing), took
			rec.Note += fmt.Sprintf("; its peer carried %d of them to the API before the thaw", rec.TakenOver)
			if len(missing) > 0 {
				rec.Note += "; not carried: " + strings.Join(missing, ", ")
			}
		}
		rec.Note += "; "
	}
	if err := sleepUntil(ctx, thawAt.Add(-freezeLook)); err != nil {
		return err
	}
	held, moved := in.stillHeld(ctx, rec.Target)
	rec.Moved = moved
	rec.Note += held
	if err := sleepUntil(ctx, thawAt); err != nil {
		return err
	}
	thawed = true
	if err := m.proc.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	if err := proc.WaitReady(ctx, m.probe, time.Now().Add(readyTimeout)); err != nil {
		return fmt.Errorf("%s not ready after the thaw: %w", rec.Target, err)
	}
	rec.Restored = time.Now()
	if now := m.proc.PID(); now != pid {
		rec.Note += fmt.Sprintf("; pid %d exited while frozen, now pid %d", pid, now)
	} else {
		rec.Note += fmt.Sprintf("; pid %d resumed", pid)
	}
	return nil
}

// stillHeld describes what the frozen member target still holds just
// before its thaw, and reports whether its peers took it over: the lease
// (informer), its partitions in the group's mapping (kube-reconciler,
// runner-manager).
func (in *injector) stillHeld(ctx context.Context, target string) (string, bool) {
	rctx, cancel := context.WithTimeout(ctx, freezeLook/2)
	defer cancel()
	switch {
	case strings.HasPrefix(target, svcInformer):
		holder, err := in.nv.leaseHolder(rctx)
		switch {
		case err != nil:
			return "lease unreadable before the thaw: " + err.Error(), false
		case holder == target:
			return "it still held the lease before the thaw", false
		default:
			return fmt.Sprintf("the lease held by %q before the thaw", holder), holder != ""
		}
	default:
		group := svcRunnerManager
		if isKubeReconciler(target) {
			group = svcKubeReconciler
		}
		owned, err := in.nv.ownedPartitions(rctx, group, target)
		switch {
		case err != nil:
			return "group mapping unreadable before the thaw: " + err.Error(), false
		case len(owned) > 0:
			return fmt.Sprintf("it still owned partitions %v of group %s before the thaw", owned, group), false
		default:
			return fmt.Sprintf("its partitions of group %s moved before the thaw", group), true
		}
	}
}

// runnerKillLimit bounds the wait for the killed runner's session to end.
const runnerKillLimit = time.Minute

// runnerKillPick bounds the wait for a session whose runner may be killed
// on the fault's replica, then runnerKillPickAny on any replica
// (killRunnerWithin), looked for every runnerKillPickEvery.
const (
	runnerKillPick      = 45 * time.Second
	runnerKillPickAny   = 30 * time.Second
	runnerKillPickEvery = 500 * time.Millisecond
)

// killRunner kills (kill -9) the runner process of one running local
// session on replica rec.Target and waits until the session ended: phase
// terminal and no runner of it in the process table. runner-manager must
// end it Failed, RunnerStarted=False "ProcessExited: killed by signal
// killed" (its README, Lifecycle), release its claim (agui-proxy then
// answers 404) and start nothing again (a terminal phase never starts
// anything); the audit checks the final state (sessionProblems) and this
// fault's record (runnerKillCheck). The session is pinned: the schedule
// leaves it alone from the kill on.
func (in *injector) killRunner(ctx context.Context, rec *faultRecord) error {
	replica := rec.Target
	latest := func() map[string][]runnerProc {
		runners, _ := in.smp.Latest()
		return runners
	}
	kill := func(pid int) error {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill -9 runner pid %d: %w", pid, err)
		}
		return nil
	}
	r, waited, err := in.drv.killRunnerWithin(ctx, latest, replica, kill, runnerKillPick, runnerKillPickEvery)
	var note string
	if errors.Is(err, errNoRunnerToKill) {
		// The fault is about a runner's death, wherever it runs; the
		// replica only spreads the kills over the run.
		var more time.Duration
		r, more, err = in.drv.killRunnerWithin(ctx, latest, "", kill, runnerKillPickAny, runnerKillPickEvery)
		note = fmt.Sprintf(" (none on %s for %s: any replica)", replica, waited.Round(time.Second))
		waited += more
	}
	if err != nil {
		return err
	}
	killed := time.Now()
	id, pid := r.Session, r.PID
	rec.Target, rec.Down0 = id, killed
	rec.Note = fmt.Sprintf("runner pid %d on %s%s", pid, r.Replica, note)
	if waited >= runnerKillPickEvery {
		rec.Note += fmt.Sprintf(", picked %s after the fault's time", waited.Round(100*time.Millisecond))
	}
	rec.Took = -1
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var phase, cond string
	for time.Since(killed) < runnerKillLimit {
		s, gerr := in.drv.api.GetSession(ctx, id)
		now, _ := in.smp.Latest()
		for _, r := range now[id] {
			if r.PID != pid && !slices.Contains(rec.Restarted, r.PID) {
				rec.Restarted = append(rec.Restarted, r.PID)
			}
		}
		if gerr == nil {
			phase, cond = s.GetPhase(), runnerStarted(s.GetConditions())
			if apisession.Phase(phase).Terminal() && len(now[id]) == 0 {
				rec.Took = time.Since(killed)
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	rec.Restored = time.Now()
	if rec.Took < 0 {
		rec.Note += fmt.Sprintf("; not ended within %s: phase %q, RunnerStarted %s", runnerKillLimit, phase, cond)
	} else {
		rec.Note += fmt.Sprintf("; session %s %s after the kill, RunnerStarted %s", phase, rec.Took.Round(100*time.Millisecond), cond)
	}
	if len(rec.Restarted) > 0 {
		rec.Note += fmt.Sprintf("; runner started again: pids %v", rec.Restarted)
	}
	return nil
}

// conditionOf returns the condition of type typ in conditions (the
// session's JSON list), if there is one; unreadable conditions have none.
func conditionOf(conditions, typ string) (apisession.Condition, bool) {
	cs, err := apisession.ParseConditions(conditions)
	if err != nil {
		return apisession.Condition{}, false
	}
	return cs.Get(typ)
}

// runnerStarted renders the RunnerStarted condition of conditions.
func runnerStarted(conditions string) string {
	c, ok := conditionOf(conditions, condRunnerStarted)
	if !ok {
		return "none"
	}
	msg, _, _ := strings.Cut(c.Message, "\n") // the stderr tail follows
	return fmt.Sprintf("%s %s %q", c.Status, c.Reason, msg)
}
