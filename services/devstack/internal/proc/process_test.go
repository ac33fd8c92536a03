package proc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"go.uber.org/goleak"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// exits collects OnExit calls; tests read the ones they expect.
type exits chan Exit

func newExits() exits { return make(exits, 16) }

func (e exits) add(x Exit) { e <- x }

func (e exits) next(t *testing.T) Exit {
	t.Helper()
	select {
	case x := <-e:
		return x
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10s")
		return Exit{}
	}
}

// run starts p.Run and returns a stop function that stops it and waits.
func run(t *testing.T, p *Process) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }() // owned by the test; ends after cancel + Stop below
	t.Cleanup(func() {
		cancel()
		if err := p.Stop(t.Context(), 5*time.Second); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

func waitPID(t *testing.T, p *Process, not int) int {
	t.Helper()
	var pid int
	testenv.Eventually(t, 10*time.Second, func() error {
		if pid = p.PID(); pid == 0 || pid == not {
			return fmt.Errorf("no child other than pid %d", not)
		}
		return nil
	})
	return pid
}

// TestRestartsAfterKill: a child killed with -9 is restarted after the
// restart delay, with a new pid written to the pid file, as a Deployment
// restarts a pod.
func TestRestartsAfterKill(t *testing.T) {
	ex := newExits()
	pidFile := filepath.Join(t.TempDir(), "c.pid")
	p := New(Spec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"60"}, PIDFile: pidFile,
		RestartMin: 50 * time.Millisecond, OnExit: ex.add})
	run(t, p)
	first := waitPID(t, p, 0)
	if err := p.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	x := ex.next(t)
	if x.PID != first || x.Held || x.Restart != 50*time.Millisecond || x.Err == nil {
		t.Fatalf("exit = %+v, want pid %d, not held, restart 50ms, an error", x, first)
	}
	second := waitPID(t, p, first)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(second) {
		t.Fatalf("pid file %q, want %d", got, second)
	}
}

// TestHoldKeepsTheChildDown: a held child stays down after it is killed
// until Release, then starts at once (an outage of a fixed length).
func TestHoldKeepsTheChildDown(t *testing.T) {
	ex := newExits()
	p := New(Spec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"60"},
		RestartMin: time.Hour, OnExit: ex.add})
	run(t, p)
	first := waitPID(t, p, 0)
	p.Hold()
	if err := p.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	if x := ex.next(t); !x.Held || x.Restart != 0 {
		t.Fatalf("exit = %+v, want held", x)
	}
	// Held: nothing may start, whatever the restart delay says.
	if pid := p.PID(); pid != 0 {
		t.Fatalf("pid %d while held, want none", pid)
	}
	p.Release()
	// RestartMin is an hour: only the release can have started it.
	waitPID(t, p, first)
}

// startStubborn runs a shell that ignores SIGTERM and has a child doing
// the same (its pid returned), as a runner busy with a tool does; cancel
// ends Run's ctx, done gets Run's result once the child is stopped.
func startStubborn(t *testing.T) (p *Process, cancel context.CancelFunc, done <-chan error, grandchild int) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	p = New(Spec{Name: "stubborn", Path: "/bin/sh",
		Args: []string{"-c", `trap '' TERM; sleep 60 & echo $! > ` + pidFile + `; wait`}})
	ctx, cancel := context.WithCancel(t.Context())
	result := make(chan error, 1)
	go func() { result <- p.Run(ctx) }() // owned by the caller; ends after cancel + Stop
	waitPID(t, p, 0)
	testenv.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return fmt.Errorf("the child did not start its own child: %q, %v", b, err)
		}
		grandchild, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	return p, cancel, result, grandchild
}

// TestStopEscalatesToKill: a child that ignores SIGTERM is killed after
// the grace period, and its whole process group with it.
func TestStopEscalatesToKill(t *testing.T) {
	p, cancel, done, grandchild := startStubborn(t)
	cancel()
	begun := time.Now()
	if err := p.Stop(t.Context(), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(begun); waited < 200*time.Millisecond {
		t.Fatalf("stopped after %s: SIGTERM was not ignored, the test proves nothing", waited)
	}
	// The shell's child ignores SIGTERM too (inherited); only the SIGKILL
	// to the group ends it. The kill is delivered asynchronously: wait for
	// it to be gone or a zombie awaiting its new parent.
	testenv.Eventually(t, 5*time.Second, func() error {
		if alive(grandchild) {
			return fmt.Errorf("grandchild %d still runs after Stop", grandchild)
		}
		return nil
	})
}

// TestStopKillsAtOnceWhenHurried: a Stop whose context ends (devstack's
// second Ctrl-C) stops waiting out the grace and kills the child's group.
func TestStopKillsAtOnceWhenHurried(t *testing.T) {
	p, cancel, done, _ := startStubborn(t)
	cancel()
	hurry, hurryNow := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop(hurry, time.Hour) }() // owned here; ends once the child is gone
	// SIGTERM is ignored: Stop waits out its hour until hurried.
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) before it was hurried, while the child ignores SIGTERM", err)
	case <-time.After(200 * time.Millisecond):
	}
	hurryNow()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop still waits for its grace after the hurry context ended")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z" && st.State != "X"
}

// TestWritePIDFileIsAtomic: a reader racing rewrites of the pid file (the
// e2e test polls it while devstack restarts a killed service) never sees
// an empty or partial file.
func TestWritePIDFileIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.pid")
	if err := WritePIDFile(path, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { // owned by the test; ends after its 2000 writes
		for pid := 100000; pid < 102000; pid++ {
			if err := WritePIDFile(path, pid); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatalf("read %q while it was rewritten: %v", b, err)
		}
	}
}
