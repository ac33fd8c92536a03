package app_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRestartEndsUnrecordedRunner: runner-manager is killed with -9 after
// it spawned a runner whose pid never reached the registry (a crash
// between the spawn and the record's write, or during a NATS outage that
// kept the write from landing). Pdeathsig kills the runner's leader, not
// the child the leader started, and no record names that child's group,
// so the takeover cannot end it. The replica's next incarnation (same
// MEMBER_ID) finds it by the RUNNER_MANAGER_MEMBER marker every runner
// carries and ends it before it starts anything. A process carrying
// another member's marker is left alone. Before the marker the child ran
// on beside the restarted runner.
func TestRestartEndsUnrecordedRunner(t *testing.T) {
	w := newWorld(t)
	const member = "rm-orphan"
	root := t.TempDir()
	command := "LOCAL_RUNNER_COMMAND=/bin/sh -c 'sleep 300 & echo $! > orphan.pid; exec " + demoRunner + "'"
	first := w.startWith(member, 2, startOpts{root: root}, command)
	id := w.create("orphaned")
	w.waitAll([]string{id}, "Running", 20*time.Second)
	orphan := testenv.PIDFile(t, filepath.Join(root, id, "orphan.pid"), 10*time.Second)
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) }) // ESRCH once ended
	if env := environOf(t, orphan); !slices.Contains(env, "RUNNER_MANAGER_MEMBER="+member) {
		t.Fatalf("runner's child %d carries no RUNNER_MANAGER_MEMBER=%s: %q", orphan, member, env)
	}
	stranger := startMarked(t, "RUNNER_MANAGER_MEMBER=rm-other")

	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-first.done; err == nil {
		t.Fatal("killed replica reported a clean exit")
	}
	// The crash came before the record's write.
	if err := w.runners.Purge(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if !pidAlive(orphan) {
		t.Fatalf("runner's child %d died with its manager: the test proves nothing", orphan)
	}

	w.startWith(member, 2, startOpts{root: root}, command)
	testenv.Eventually(t, 15*time.Second, func() error {
		if pidAlive(orphan) {
			return fmt.Errorf("runner's child %d still runs", orphan)
		}
		return nil
	})
	if !pidAlive(stranger) {
		t.Fatalf("process %d of another member was ended", stranger)
	}
}

// environOf is the initial environment of process pid.
func environOf(t *testing.T, pid int) []string {
	t.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	env, err := p.Environ()
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// startMarked starts a long sleep carrying marker in its environment.
func startMarked(t *testing.T, marker string) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), marker}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // killed
	})
	return cmd.Process.Pid
}
