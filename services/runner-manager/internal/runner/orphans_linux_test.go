package runner

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestEndOrphansEndsOnlyThisMembersProcesses: EndOrphans ends every
// process carrying this member's marker and a workspace under its root,
// whatever its group: one that obeys SIGTERM, one that ignores it (SIGKILL
// after the grace) and the child that one forked. Processes of another
// member, of another stack with the same member id (another root), without
// a workspace or without a marker are left alone.
func TestEndOrphansEndsOnlyThisMembersProcesses(t *testing.T) {
	t.Parallel()
	const member = "rm-orphans-test"
	root, otherRoot := t.TempDir(), t.TempDir()
	mine := []string{EnvOwner + "=" + member, EnvWorkspace + "=" + filepath.Join(root, "s1")}
	obeys := startMarkedProcess(t, mine, `exec sleep 60`)
	stubborn := startMarkedProcess(t, mine, `trap "" TERM; sleep 60 & echo $! > child.pid; while :; do sleep 0.05; done`)
	child := testenv.PIDFile(t, filepath.Join(stubborn.dir, "child.pid"), 5*time.Second)
	otherMember := startMarkedProcess(t, []string{EnvOwner + "=rm-someone-else", mine[1]}, `exec sleep 60`)
	otherStack := startMarkedProcess(t, []string{mine[0], EnvWorkspace + "=" + filepath.Join(otherRoot, "s1")}, `exec sleep 60`)
	noWorkspace := startMarkedProcess(t, mine[:1], `exec sleep 60`)
	unmarked := startMarkedProcess(t, nil, `exec sleep 60`)

	n, err := EndOrphans(t.Context(), slog.New(slog.DiscardHandler), member, root, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 { // the loop's short sleeps may be counted too
		t.Errorf("found %d processes, want at least 3 (two shells and a forked child)", n)
	}
	for name, pid := range map[string]int{"obeys SIGTERM": obeys.pid, "ignores SIGTERM": stubborn.pid, "forked child": child} {
		if processRuns(pid) {
			t.Errorf("%s (%d) still runs", name, pid)
		}
	}
	for name, pid := range map[string]int{
		"another member's": otherMember.pid, "another stack's (same member, other root)": otherStack.pid,
		"without a workspace": noWorkspace.pid, "unmarked": unmarked.pid,
	} {
		if !processRuns(pid) {
			t.Errorf("%s process %d was ended", name, pid)
		}
	}
}

type markedProcess struct {
	pid int
	dir string
}

// startMarkedProcess runs script in /bin/sh in its own process group, with
// env added to its environment.
func startMarkedProcess(t *testing.T, env []string, script string) markedProcess {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	// Reaped at once when it ends, so that it shows as gone rather than
	// as a zombie of the test.
	go func() { _ = cmd.Wait() }() // owned by the test; ends with the process
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	return markedProcess{pid: pgid, dir: dir}
}
