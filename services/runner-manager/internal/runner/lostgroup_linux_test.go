package runner

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestEndLostGroupSignalsOnlyTheRunnersGroup: EndLostGroup ends a lost
// runner's group only when it provably is that runner's: its leader runs
// with the recorded start time, or, the leader gone, every member carries
// the session's SESSION_ID. A recycled pid (another start time), a record
// without a start time and a leaderless group of strangers are left alone.
// A member found with its leader stays the runner's when the SIGTERM ends
// the leader first: one that ignores SIGTERM and lacks the marker is
// killed after the grace, not taken for a stranger.
func TestEndLostGroupSignalsOnlyTheRunnersGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		leaderGone bool   // the leader exits at once, leaving its child
		env        string // the group's extra environment
		startSkew  int64  // added to the recorded start time
		noStart    bool   // a record without a start time
		ignoreTerm bool   // the member ignores SIGTERM
		wantEnded  bool
	}{
		{name: "leader with the recorded start", wantEnded: true},
		{name: "leader with the recorded start, member ignoring SIGTERM", ignoreTerm: true, wantEnded: true},
		{name: "recycled pid", startSkew: -1},
		{name: "record without start time", noStart: true},
		{name: "leader gone, members of the session", leaderGone: true, env: EnvSessionID + "=s", wantEnded: true},
		{name: "leader gone, members of another session", leaderGone: true, env: EnvSessionID + "=other"},
		{name: "leader gone, members without a session", leaderGone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, member := startGroupOf(t, tc.leaderGone, tc.ignoreTerm, tc.env)
			g.StartTicks = uint64(int64(g.StartTicks) + tc.startSkew)
			if tc.noStart {
				g.StartTicks = 0
			}
			grace := 5 * time.Second
			if tc.ignoreTerm {
				grace = 200 * time.Millisecond // waited out in full: the member ignores it
			}
			if err := EndLostGroup(t.Context(), slog.New(slog.DiscardHandler), g, grace); err != nil {
				t.Fatal(err)
			}
			if ended := !processRuns(member); ended != tc.wantEnded {
				t.Fatalf("member %d of group %d ended: %v, want %v", member, g.PGID, ended, tc.wantEnded)
			}
		})
	}
}

// startGroupOf starts a process group (leader: a shell; member: its
// background sleep, pid written to member.pid) with env, and returns it as
// a lost group of session "s" with the leader's start time, and the
// member's pid. With leaderGone the leader exits once the member runs;
// with ignoreTerm the member ignores SIGTERM (the leader does not).
func startGroupOf(t *testing.T, leaderGone, ignoreTerm bool, env string) (LostGroup, int) {
	t.Helper()
	dir := t.TempDir()
	child := `sleep 60`
	if ignoreTerm {
		child = `sh -c 'trap "" TERM; exec sleep 60'`
	}
	script := child + ` & echo $! > member.pid; wait`
	if leaderGone {
		script = child + ` & echo $! > member.pid`
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if env != "" {
		cmd.Env = append(cmd.Env, env)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait() // killed, or exited before
	})
	start, err := startTicks(pgid) // not yet reaped: readable even if it exited
	if err != nil {
		t.Fatal(err)
	}
	member := testenv.PIDFile(t, filepath.Join(dir, "member.pid"), 5*time.Second)
	if leaderGone {
		_ = cmd.Wait() // exit 0
	}
	return LostGroup{PGID: pgid, StartTicks: start, SessionID: "s"}, member
}

// processRuns reports whether pid runs (a zombie does not).
func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}
