package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// orphanRounds bounds the SIGKILL rounds of EndOrphans: a process may fork
// while it is killed, and its child carries the marker too.
const orphanRounds = 10

// orphan is one process a previous incarnation left: its pid and start
// time, which together name it for as long as the machine runs.
type orphan struct {
	pid   int
	start uint64
}

// EndOrphans ends every runner process a previous incarnation of this
// replica left running: each process whose environment carries
// RUNNER_MANAGER_MEMBER=member and a WORKSPACE_PATH directly under
// workspaceRoot. Both: a replica is its member id and its workspaces, and
// another stack on the same machine (a second dev stack, a test) may use
// the same member id with its own root. It is called once at start-up,
// before this incarnation starts any runner, so every such process is
// lost.
//
// The registry's records cover the same ground only where a record was
// written: a crash between a spawn and the record's write, or during a
// NATS outage that kept the record from being written, left a runner no
// record names (EndLostGroup is the takeover's path for recorded ones). All
// are ended at once: SIGTERM, SIGKILL after grace to what remains; ctx
// ending cuts the grace short. It returns how many processes it found.
//
// A process that cleared its environment, or whose environment this user
// may not read, is not found here (the recorded group catches it when a
// record exists).
func EndOrphans(ctx context.Context, log *slog.Logger, member, workspaceRoot string, grace time.Duration) (int, error) {
	if member == "" {
		return 0, nil
	}
	root, err := filepath.Abs(workspaceRoot) // as WorkspacePath makes it
	if err != nil {
		return 0, fmt.Errorf("workspace root %q: %w", workspaceRoot, err)
	}
	marker := ownedBy{member: EnvOwner + "=" + member, root: root}
	found := markedProcesses(marker)
	if len(found) == 0 {
		return 0, nil
	}
	log.Warn("ending runner processes a previous run of this replica left", slog.Int(logkey.Count, len(found)))
	signalOrphans(found, syscall.SIGTERM)
	if waitOrphans(ctx, found, grace) {
		return len(found), nil
	}
	for range orphanRounds {
		left := markedProcesses(marker) // forked children carry the marker too
		if len(left) == 0 {
			return len(found), nil
		}
		signalOrphans(left, syscall.SIGKILL)
		if !waitOrphans(context.WithoutCancel(ctx), left, lostKillWait) {
			return len(found), fmt.Errorf("%d runner processes of a previous run outlived SIGKILL by %v", len(left), lostKillWait)
		}
	}
	if left := markedProcesses(marker); len(left) > 0 {
		return len(found), fmt.Errorf("%d runner processes of a previous run still fork after %d SIGKILL rounds", len(left), orphanRounds)
	}
	return len(found), nil
}

// ownedBy tells a replica's runners by their initial environment.
type ownedBy struct {
	member string // RUNNER_MANAGER_MEMBER=<member id>
	root   string // the absolute workspace root
}

func (o ownedBy) matches(env []string) bool {
	if !slices.Contains(env, o.member) {
		return false
	}
	for _, kv := range env {
		if ws, ok := strings.CutPrefix(kv, EnvWorkspace+"="); ok {
			return filepath.Dir(ws) == o.root
		}
	}
	return false
}

// markedProcesses returns the live processes (not this one, no zombies)
// whose initial environment marker matches.
func markedProcesses(marker ownedBy) []orphan {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []orphan
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || st.PID == self || st.State == "Z" {
			continue
		}
		env, err := p.Environ() // unreadable (another user's): not ours
		if err != nil || !marker.matches(env) {
			continue
		}
		out = append(out, orphan{pid: st.PID, start: st.Starttime})
	}
	return out
}

// signalOrphans sends sig to each process still running with its recorded
// start time: a pid recycled since the scan is left alone.
func signalOrphans(procs []orphan, sig syscall.Signal) {
	for _, o := range procs {
		if running(o) {
			_ = syscall.Kill(o.pid, sig) // ESRCH: it ended meanwhile
		}
	}
}

// waitOrphans reports whether every process ended within d or before ctx
// ended.
func waitOrphans(ctx context.Context, procs []orphan, d time.Duration) bool {
	return pollUntil(ctx, d, func() bool { return !slices.ContainsFunc(procs, running) })
}

// running reports whether o still runs: same pid, same start time, not a
// zombie.
func running(o orphan) bool {
	p, err := procfs.NewProc(o.pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.Starttime == o.start && st.State != "Z"
}
