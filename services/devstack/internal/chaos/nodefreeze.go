package chaos

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/registry"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// thawBound is how long after a node's thaw the old runners of the
// sessions its peer took over may live. runner-manager kills them as soon
// as its record watch delivers the takeovers: measured 20-141 ms (once
// 264 ms) from the thaw until they were gone, on a loaded 2-core host
// (services/runner-manager/internal/claim, "A paused node"); its fallback,
// the sweep's ownership check, is due at once too (its interval passed
// while the node was stopped). 5 s is about twenty times the slowest
// measured, room for this suite's loaded host, and far below anything a
// missed takeover would take (a runner check every 10 s, a resync every
// minute): a runner alive past it was not killed by the thaw's news.
const thawBound = 5 * time.Second

// thawSlack: a sample of the process table begins before it reads each
// runner's state, so one that began up to a scan before the SIGCONTs may
// see a thawed runner live (scans take tens of milliseconds; a second is
// plenty and still far from the freeze's tens of seconds).
const thawSlack = time.Second

// thawWatch is how long after the thaw the harness watches the old
// runners (every thawPoll) and the changes of their sessions in the API.
const (
	thawWatch = 2 * thawBound
	thawPoll  = 10 * time.Millisecond
)

// nodeFreezeLook is how long before the thaw the harness reads the
// group's mapping, the claims and the moved sessions, and opens its watch
// of the API.
const nodeFreezeLook = 2 * time.Second

// frozenRunner is a runner process stopped with its node.
type frozenRunner struct {
	runnerProc
	// PGID is its process group (a runner leads its own); Start its start
	// time (/proc/<pid>/stat field 22), to tell it from a later process
	// with its pid.
	PGID  int
	Start uint64
}

// oldRunner is a runner frozen with its node whose session the peer took
// over before the thaw.
type oldRunner struct {
	Session string
	PID     int
	// Owner is the session's KV owner just before the thaw ("": no record,
	// released: the session ended or was deleted meanwhile).
	Owner string
	// Phase and Conditions are the session's in the API just before the
	// thaw: what a change after it is compared with.
	Phase, Conditions string
	// Lived is how long after the thaw the process was still there
	// (stopped or running): 0 gone before the thaw; -1 still there
	// thawWatch after it.
	Lived time.Duration
}

// sessionChange is one change of a session the API announced (its watch),
// with the time it arrived.
type sessionChange struct {
	Session           string
	At                time.Time
	Phase, Conditions string
}

// nodeFreeze freezes the node of runner-manager replica rec.Target: its
// process group first (it spawns nothing while stopped), then the process
// group of every runner of it (a runner of the replica as the process
// table attributes them: its workspace lies in the replica's root; and
// any child of the replica not yet exec'd), all with SIGSTOP. Its peer
// sees the member gone, probes the frozen runners (they accept a
// connection and never answer), takes the claims over and starts the
// sessions again. Just before the thaw the harness reads whether the
// partitions and every claim moved (rec.Moved), which sessions moved, and
// opens a watch of the API; then it resumes the runners and the replica
// together (SIGCONT) and times how long each old runner of a moved session
// lives on (rec.Old), watching the API for thawWatch (rec.AfterThaw).
func (in *injector) nodeFreeze(ctx context.Context, rec *faultRecord) error {
	m, ok := in.sys.byName[rec.Target]
	if !ok {
		return fmt.Errorf("no member %s", rec.Target)
	}
	pid := m.proc.PID()
	if pid == 0 {
		return fmt.Errorf("%s is not running", rec.Target)
	}
	if err := m.proc.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	rec.Down0 = time.Now()
	var groups []int
	thawed := false
	defer func() {
		if !thawed { // an error or a cancelled run: never leave the node stopped
			_ = signalGroups(groups, syscall.SIGCONT) //nolint:errcheck // best effort on the error path
			_ = m.proc.Signal(syscall.SIGCONT)        //nolint:errcheck // best effort on the error path
		}
	}()
	fs, err := procfs.NewFS("/proc")
	if err != nil {
		return fmt.Errorf("procfs: %w", err)
	}
	frozen, groups, err := nodeProcesses(fs, filepath.Join(in.sys.cfg.BinDir, "demo-runner"), in.sys.workRoot, rec.Target, pid)
	if err != nil {
		return err
	}
	rec.Frozen = frozen
	if err := signalGroups(groups, syscall.SIGSTOP); err != nil {
		return err
	}
	claimed := "its claims unreadable"
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if records, kerr := in.nv.runnerRecords(kctx); kerr == nil {
		claimed = fmt.Sprintf("%d claims of it in KV", len(ownedBy(records, rec.Target)))
	}
	cancel()
	rec.Note = fmt.Sprintf("froze %s (pid %d) and %d process groups of its runners (%s); %s; ", rec.Target, pid, len(groups), describeFrozen(frozen), claimed)

	thawAt := rec.Down0.Add(rec.Down)
	if err := sleepUntil(ctx, thawAt.Add(-nodeFreezeLook)); err != nil {
		return err
	}
	held, partsMoved := in.stillHeld(ctx, rec.Target)
	rec.Note += held
	kctx, cancel = context.WithTimeout(ctx, nodeFreezeLook/2)
	records, kerr := in.nv.runnerRecords(kctx)
	cancel()
	if kerr != nil {
		rec.Note += "; claims unreadable before the thaw: " + kerr.Error()
	} else {
		rec.StillClaimed = ownedBy(records, rec.Target)
		if len(rec.StillClaimed) > 0 {
			rec.Note += fmt.Sprintf("; it still held %d claims before the thaw: %s", len(rec.StillClaimed), strings.Join(rec.StillClaimed, ", "))
		} else {
			rec.Note += "; none of its claims left in KV before the thaw"
		}
	}
	rec.Moved = partsMoved && kerr == nil && len(rec.StillClaimed) == 0
	moved := map[string]bool{}
	for _, f := range frozen {
		owner, has := records[f.Session]
		if kerr != nil || (has && owner.Owner == rec.Target) {
			continue // not taken over: no bound applies to its runner
		}
		o := oldRunner{Session: f.Session, PID: f.PID, Owner: owner.Owner}
		if s, gerr := in.drv.api.GetSession(ctx, f.Session); gerr == nil {
			o.Phase, o.Conditions = s.GetPhase(), s.GetConditions()
		}
		rec.Old = append(rec.Old, o)
		moved[f.Session] = true
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var changes []sessionChange
	var watchErr error
	watchDone := make(chan struct{})
	stream, err := in.drv.api.WatchSessions(watchCtx)
	if err != nil {
		watchErr = err
		close(watchDone)
	} else {
		go func() { // owned by this fault: ends with stopWatch below
			defer close(watchDone)
			for {
				ev, rerr := stream.Recv()
				if rerr != nil {
					if watchCtx.Err() == nil {
						watchErr = rerr
					}
					return
				}
				s := ev.GetSession()
				if ev.GetType() == ambientv1.EventType_EVENT_TYPE_UPDATED && moved[s.GetMetadata().GetId()] {
					changes = append(changes, sessionChange{Session: s.GetMetadata().GetId(), At: time.Now(), Phase: s.GetPhase(), Conditions: s.GetConditions()})
				}
			}
		}()
	}
	if err := sleepUntil(ctx, thawAt); err != nil {
		return err
	}
	// Gone while frozen (nothing should kill a frozen runner): lived 0.
	for i, o := range rec.Old {
		if f := frozenOf(frozen, o.PID); f == nil || !present(fs, *f) {
			rec.Old[i].Lived = 0
		} else {
			rec.Old[i].Lived = -1
		}
	}
	thawed = true
	rec.Thawed = time.Now()
	thawErr := errors.Join(signalGroups(groups, syscall.SIGCONT), m.proc.Signal(syscall.SIGCONT))
	in.timeOld(ctx, fs, rec, frozen)
	readyErr := proc.WaitReady(ctx, m.probe, time.Now().Add(readyTimeout))
	rec.Restored = time.Now()
	if err := sleepUntil(ctx, rec.Thawed.Add(thawWatch)); err != nil {
		return err
	}
	stopWatch()
	<-watchDone
	for _, c := range changes {
		if !c.At.Before(rec.Thawed) {
			rec.AfterThaw = append(rec.AfterThaw, c)
		}
	}
	if watchErr != nil {
		rec.WatchErr = watchErr.Error()
	}
	rec.Note += fmt.Sprintf("; %d sessions taken over; after the thaw their old runners lived %s; %d changes of them announced within %s of the thaw",
		len(rec.Old), livedText(rec.Old), len(rec.AfterThaw), thawWatch)
	if now := m.proc.PID(); now != pid {
		rec.Note += fmt.Sprintf("; pid %d exited while frozen, now pid %d", pid, now)
	}
	if readyErr != nil {
		readyErr = fmt.Errorf("%s not ready after the thaw: %w", rec.Target, readyErr)
	}
	return errors.Join(thawErr, readyErr)
}

// timeOld polls the old runners of rec from the thaw until each is gone or
// thawWatch passed, and records how long each lived (rec.Old[i].Lived; -1
// still there).
func (in *injector) timeOld(ctx context.Context, fs procfs.FS, rec *faultRecord, frozen []frozenRunner) {
	tick := time.NewTicker(thawPoll)
	defer tick.Stop()
	for {
		left := 0
		for i, o := range rec.Old {
			if o.Lived >= 0 {
				continue
			}
			if f := frozenOf(frozen, o.PID); f != nil && present(fs, *f) {
				left++
				continue
			}
			rec.Old[i].Lived = max(time.Since(rec.Thawed), time.Nanosecond)
		}
		if left == 0 || time.Since(rec.Thawed) > thawWatch {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// nodeProcesses finds the runner processes of replica (a runner of this run
// whose workspace lies in the replica's root, live or stopped) and the
// process groups to stop with its runner-manager manager: the runners'
// groups, and those of the manager's children that are not runners yet (a
// child forked but not yet exec'd already leads its own group). The
// caller's own group, the manager's and init's are never among them.
func nodeProcesses(fs procfs.FS, exe, workRoot, replica string, manager int) ([]frozenRunner, []int, error) {
	table := &procTable{fs: fs, exe: exe, workRoot: filepath.Clean(workRoot) + string(filepath.Separator), known: map[int]procEntry{}}
	live, stopped, err := table.scanStates()
	if err != nil {
		return nil, nil, err
	}
	var runners []frozenRunner
	var groups []int
	addGroup := func(g int) {
		if g > 1 && g != manager && g != syscall.Getpgrp() && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	for _, r := range append(live, stopped...) {
		if r.Replica != replica {
			continue
		}
		p, err := fs.Proc(r.PID)
		if err != nil {
			continue // exited meanwhile
		}
		st, err := p.Stat()
		if err != nil {
			continue
		}
		runners = append(runners, frozenRunner{runnerProc: r, PGID: st.PGRP, Start: st.Starttime})
		addGroup(st.PGRP)
	}
	all, err := fs.AllProcs()
	if err != nil {
		return nil, nil, fmt.Errorf("list processes: %w", err)
	}
	for _, p := range all {
		if st, err := p.Stat(); err == nil && st.PPID == manager && st.State != "Z" && st.State != "X" {
			addGroup(st.PGRP)
		}
	}
	slices.SortFunc(runners, func(a, b frozenRunner) int { return a.PID - b.PID })
	slices.Sort(groups)
	return runners, groups, nil
}

// signalGroups sends sig to each process group; a group gone meanwhile is
// no error.
func signalGroups(groups []int, sig syscall.Signal) error {
	var errs []error
	for _, g := range groups {
		if err := syscall.Kill(-g, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("%s to process group %d: %w", sig, g, err))
		}
	}
	return errors.Join(errs...)
}

// present reports whether f's process is still there, running or stopped:
// not gone, not a zombie, and not another process that got its pid.
func present(fs procfs.FS, f frozenRunner) bool {
	p, err := fs.Proc(f.PID)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z" && st.State != "X" && st.Starttime == f.Start
}

func frozenOf(frozen []frozenRunner, pid int) *frozenRunner {
	for i := range frozen {
		if frozen[i].PID == pid {
			return &frozen[i]
		}
	}
	return nil
}

// ownedBy returns the sessions whose record names owner, sorted.
func ownedBy(records map[string]registry.Endpoint, owner string) []string {
	var out []string
	for id, r := range records {
		if r.Owner == owner {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func describeFrozen(frozen []frozenRunner) string {
	if len(frozen) == 0 {
		return "no runner"
	}
	parts := make([]string, len(frozen))
	for i, f := range frozen {
		parts[i] = fmt.Sprintf("%s pid %d", f.Session, f.PID)
	}
	return strings.Join(parts, ", ")
}

// livedText renders the longest life of old runners after the thaw.
func livedText(old []oldRunner) string {
	var longest time.Duration
	for _, o := range old {
		if o.Lived < 0 {
			return fmt.Sprintf("past %s (some still alive)", thawWatch)
		}
		longest = max(longest, o.Lived)
	}
	if len(old) == 0 {
		return "nothing (none)"
	}
	return "at most " + longest.Round(time.Millisecond).String()
}
