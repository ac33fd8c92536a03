package app_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// procInfo is a process's parent and state from /proc/<pid>/stat.
func procInfo(pid int) (ppid int, state string, ok bool) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, "", false
	}
	st, err := p.Stat()
	if err != nil {
		return 0, "", false
	}
	return st.PPID, st.State, true
}

// pidsRunning lists live processes whose command line contains s.
func pidsRunning(s string) []int {
	var out []int
	all, _ := procfs.AllProcs() // always readable on Linux
	for _, p := range all {
		args, err := p.CmdLine()
		if err == nil && strings.Contains(strings.Join(args, " "), s) && pidAlive(p.PID) {
			out = append(out, p.PID)
		}
	}
	return out
}

// zombieChildren lists the zombie children of pid.
func zombieChildren(pid int) []int {
	var out []int
	all, _ := procfs.AllProcs() // always readable on Linux
	for _, p := range all {
		if st, err := p.Stat(); err == nil && st.PPID == pid && st.State == "Z" {
			out = append(out, p.PID)
		}
	}
	return out
}

// Issue 14 review: a runner's processes that setsid out of its process
// group escaped the group kill (they lived on after the session stopped),
// and runner-manager, PID 1 in its container, never reaped the ones that
// exited. Now runner-manager is their subreaper: an escaped process is
// its child, one that exits is reaped, and the session's stop kills the
// rest (found by the SESSION_ID in their environment).
func TestEscapedRunnerProcessesReaped(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	escapee := filepath.Join(dir, "escapee.sh")
	quick := filepath.Join(dir, "quick.sh")
	for path, body := range map[string]string{escapee: "while :; do sleep 0.2; done\n", quick: "exit 0\n"} {
		if err := os.WriteFile(path, []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A double fork: the subshell exits at once, so the setsid'd scripts
	// lose their parent and are reparented.
	cmd := fmt.Sprintf(`/bin/sh -c '(setsid /bin/sh %s &); (setsid /bin/sh %s &); exec %s'`, escapee, quick, demoRunner)
	svc := w.start("rm-0", 5, "LOCAL_RUNNER_COMMAND="+cmd)
	id := w.create("escapes")
	w.waitAll([]string{id}, "Running", 15*time.Second)
	var esc int
	testenv.Eventually(t, 10*time.Second, func() error {
		pids := pidsRunning(escapee)
		if len(pids) != 1 {
			return fmt.Errorf("escaped processes %v, want one", pids)
		}
		esc = pids[0]
		if ppid, _, _ := procInfo(esc); ppid != svc.cmd.Process.Pid {
			return fmt.Errorf("escaped process %d has parent %d, want runner-manager %d", esc, ppid, svc.cmd.Process.Pid)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if z := zombieChildren(svc.cmd.Process.Pid); len(z) > 0 {
			return fmt.Errorf("unreaped children of runner-manager: %v", z)
		}
		return nil
	})
	if _, err := w.client.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: ptr("Stopping")}); err != nil {
		t.Fatal(err)
	}
	w.waitAll([]string{id}, "Stopped", 15*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if pidAlive(esc) {
			return errors.New("escaped process outlived its session")
		}
		if z := zombieChildren(svc.cmd.Process.Pid); len(z) > 0 {
			return fmt.Errorf("unreaped children of runner-manager: %v", z)
		}
		return nil
	})
}
