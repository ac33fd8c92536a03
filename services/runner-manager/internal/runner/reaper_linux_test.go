package runner

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// reaperHelperEnv makes the test binary run one reaper scenario itself
// (the variable's value names the test): NewReaper makes the calling
// process a subreaper for good, and KillDescendants kills every untracked
// descendant, so each scenario runs in a process of its own, not beside
// the package's other tests.
const reaperHelperEnv = "RUNNER_REAPER_HELPER"

// inReaperProcess runs scenario in a fresh copy of the test binary, or,
// inside that copy, runs it here.
func inReaperProcess(t *testing.T, scenario func(t *testing.T)) {
	t.Helper()
	if os.Getenv(reaperHelperEnv) == t.Name() {
		scenario(t)
		return
	}
	helper := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v")
	helper.Env = append(os.Environ(), reaperHelperEnv+"="+t.Name())
	out, err := helper.CombinedOutput()
	if err != nil {
		t.Fatalf("scenario failed: %v\n%s", err, out)
	}
}

// TestReaperKillsEscapedProcesses: processes that outlived the shell that
// started them (reparented to the reaper) are killed by KillSession only
// when they carry that session's SESSION_ID, and by KillDescendants at
// shutdown whatever they carry; a tracked runner is killed by neither.
func TestReaperKillsEscapedProcesses(t *testing.T) {
	inReaperProcess(t, reaperScenario)
}

func reaperScenario(t *testing.T) {
	r := newReaper(t)
	runReaper(t, r)

	// A tracked runner: a child whose exec.Cmd waits for it.
	runner := exec.Command("sleep", "60")
	if err := r.spawn(func() (int, error) {
		if err := runner.Start(); err != nil {
			return 0, err
		}
		return runner.Process.Pid, nil
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = runner.Process.Kill()
		_ = runner.Wait()
		r.untrack(runner.Process.Pid)
	}()
	// Escapees: the shell exits at once and its background sleep is
	// reparented to this process.
	startEscapees(t, "s1", "s1", "s2", "")
	waitEscaped(t, runner.Process.Pid, map[string]int{"s1": 2, "s2": 1, "": 1})

	if n := r.KillSession("s1"); n != 2 {
		t.Errorf("KillSession(s1) killed %d, want 2", n)
	}
	waitEscaped(t, runner.Process.Pid, map[string]int{"s2": 1, "": 1})
	if n := r.KillSession("s3"); n != 0 {
		t.Errorf("KillSession(s3) killed %d, want 0", n)
	}
	if n := r.KillDescendants(); n != 2 {
		t.Errorf("KillDescendants killed %d, want 2", n)
	}
	waitEscaped(t, runner.Process.Pid, map[string]int{})
	if p, err := procfs.NewProc(runner.Process.Pid); err != nil {
		t.Errorf("the tracked runner is gone: %v", err)
	} else if st, err := p.Stat(); err != nil || st.State == "Z" {
		t.Errorf("the tracked runner was killed: %+v, %v", st, err)
	}
}

// newReaper makes this process a subreaper, or skips the test where the
// kernel refuses.
func newReaper(t *testing.T) *Reaper {
	t.Helper()
	r, err := NewReaper(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Skipf("no subreaper here: %v", err)
	}
	return r
}

// runReaper runs r's reaping loop until the test has ended.
func runReaper(t *testing.T, r *Reaper) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reaping := make(chan error, 1)
	go func() { reaping <- r.Run(ctx) }() // stopped in cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-reaping; err != nil {
			t.Errorf("reaper Run = %v", err)
		}
	})
}

// startEscapees starts one sleep per session ("": without SESSION_ID)
// through a shell that exits at once, so each sleep is reparented to this
// process.
func startEscapees(t *testing.T, sessions ...string) {
	t.Helper()
	for _, session := range sessions {
		sh := exec.Command("/bin/sh", "-c", "sleep 60 & exit 0")
		sh.Env = []string{"PATH=" + os.Getenv("PATH")}
		if session != "" {
			sh.Env = append(sh.Env, EnvSessionID+"="+session)
		}
		if err := sh.Run(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReaperCountsEachKillOnce: a process stays alive in /proc from its
// SIGKILL until the kernel runs its exit, on a loaded machine past
// KillSession's next scan. KillSession neither kills nor counts it again
// (it once reported "killed 3" for 2 processes under load). The test
// holds the SIGKILLs back until KillSession returns, which is that lag
// made certain.
func TestReaperCountsEachKillOnce(t *testing.T) {
	inReaperProcess(t, func(t *testing.T) {
		r := newReaper(t)
		var held []int
		r.kill = func(pid int, sig unix.Signal) error {
			if sig != unix.SIGKILL {
				return unix.Kill(pid, sig)
			}
			held = append(held, pid)
			return nil
		}
		runReaper(t, r)
		startEscapees(t, "s1", "s1", "s2")
		waitEscaped(t, 0, map[string]int{"s1": 2, "s2": 1})

		if n := r.KillSession("s1"); n != 2 {
			t.Errorf("KillSession(s1) killed %d, want 2", n)
		}
		if len(held) != 2 {
			t.Errorf("KillSession(s1) sent %d SIGKILLs, want 2", len(held))
		}
		for _, pid := range held {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				t.Errorf("deliver the held SIGKILL to %d: %v", pid, err)
			}
		}
		waitEscaped(t, 0, map[string]int{"s2": 1})
		r.kill = unix.Kill
		if n := r.KillDescendants(); n != 1 {
			t.Errorf("KillDescendants killed %d, want 1", n)
		}
		waitEscaped(t, 0, map[string]int{})
	})
}

// TestKillDescendantsWaitsForTheKilled: a SIGKILL takes effect when the
// kernel runs the process's exit, on a loaded node after the signal's
// return; runner-manager exits right after KillDescendants, so it returns
// only once the processes it killed are gone. The test delivers each
// SIGKILL a moment late, which is that lag made certain.
func TestKillDescendantsWaitsForTheKilled(t *testing.T) {
	inReaperProcess(t, func(t *testing.T) {
		r := newReaper(t)
		r.kill = func(pid int, sig unix.Signal) error {
			if sig != unix.SIGKILL {
				return unix.Kill(pid, sig)
			}
			time.AfterFunc(300*time.Millisecond, func() { _ = unix.Kill(pid, unix.SIGKILL) })
			return nil
		}
		runReaper(t, r)
		startEscapees(t, "", "s1")
		waitEscaped(t, 0, map[string]int{"": 1, "s1": 1})
		if n := r.KillDescendants(); n != 2 {
			t.Errorf("KillDescendants killed %d, want 2", n)
		}
		// At once: no wait here.
		all, err := procfs.AllProcs()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range all {
			if st, err := p.Stat(); err == nil && st.PPID == os.Getpid() && st.Comm == "sleep" && st.State != "Z" {
				t.Errorf("KillDescendants returned with escaped process %d still running", st.PID)
			}
		}
	})
}

// waitEscaped waits until the live (not zombie) sleeps under this
// process other than tracked are want, counted by their SESSION_ID (""
// for none), and every one that died has been reaped.
func waitEscaped(t *testing.T, tracked int, want map[string]int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		all, err := procfs.AllProcs()
		if err != nil {
			return err
		}
		got := map[string]int{}
		for _, p := range all {
			st, err := p.Stat()
			if err != nil || st.PPID != os.Getpid() || st.Comm != "sleep" || st.PID == tracked {
				continue
			}
			if st.State == "Z" {
				return fmt.Errorf("zombie %d not reaped", st.PID)
			}
			env, err := p.Environ()
			if err != nil {
				return err
			}
			session := ""
			for _, kv := range env {
				if v, ok := strings.CutPrefix(kv, EnvSessionID+"="); ok {
					session = v
				}
			}
			got[session]++
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("escaped sleeps by session %v, want %v", got, want)
		}
		return nil
	})
}
