package reconcile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// doomedManagerEnv makes the test binary act as a runner-manager that
// spawns one runner (through package runner, as runner-manager does) and
// is then killed with -9 by the test: its value is the spawn's JSON
// (doomedSpawn).
const doomedManagerEnv = "RUNNER_MANAGER_DOOMED"

// doomedSpawn is what the doomed manager is asked to spawn, and reports.
type doomedSpawn struct {
	SessionID  string   `json:"session_id"`
	Command    []string `json:"command"`
	Root       string   `json:"root"`
	PID        int      `json:"pid"`
	StartTicks uint64   `json:"start_ticks"`
	Port       int      `json:"port"`
}

// TestRestartEndsLostRunnerGroup: runner-manager is killed with -9 while
// its runner runs. Pdeathsig kills the runner's leader (a shell), not the
// demo runner it started, which lives on in the runner's process group
// and keeps serving. The replica's next incarnation (same member id)
// recovers its stale claim: it ends that group before it restarts the
// session, so exactly one runner of the session runs afterwards. Before
// the fix the orphan kept running beside the restarted runner.
func TestRestartEndsLostRunnerGroup(t *testing.T) {
	if spec := os.Getenv(doomedManagerEnv); spec != "" {
		runDoomedManager(t, spec)
		return
	}
	t.Parallel()
	e := newEnv(t)
	s := e.create("lost with its manager")
	id := s.GetMetadata().GetId()
	command := []string{"/bin/sh", "-c", demoRunner + ` & echo $! > member.pid; wait`}
	lost := spawnAndCrash(t, doomedSpawn{SessionID: id, Command: command, Root: t.TempDir()})
	orphan := waitOrphanServing(t, lost)
	t.Cleanup(func() {
		if pidAlive(orphan) {
			_ = syscall.Kill(orphan, syscall.SIGKILL) // the test failed: leave nothing behind
		}
	})

	// What the crashed incarnation had written.
	if _, err := registry.Claim(t.Context(), e.runners, registry.Endpoint{SessionID: id, ProjectID: "proj", Owner: "rm-0", Host: "127.0.0.1",
		Port: lost.Port, PID: lost.PID, PIDStart: lost.StartTicks, StartedAt: time.Now().UTC(), State: registry.StateRunning}); err != nil {
		t.Fatal(err)
	}
	e.setPhase(id, session.PhaseRunning)

	e.replica(replicaOpts{member: "rm-0", command: command}) // its sweep recovers the claim
	var rec registry.Record
	testenv.Eventually(t, 10*time.Second, func() error {
		var err error
		if rec, err = registry.Get(t.Context(), e.runners, id); err != nil {
			return err
		}
		if rec.PID == lost.PID || rec.State != registry.StateRunning {
			return fmt.Errorf("record %+v: not restarted yet", rec)
		}
		return nil
	})
	if pidAlive(orphan) {
		t.Fatalf("orphaned runner %d of the lost group %d still runs beside the restarted runner %d", orphan, lost.PID, rec.PID)
	}
	for _, pid := range sessionProcesses(t, id) {
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid != rec.PID {
			t.Errorf("process %d of session %s in group %d, outside the restarted runner's group %d", pid, id, pgid, rec.PID)
		}
	}
}

// runDoomedManager is the doomed runner-manager: it spawns spec's runner,
// prints the spawn as JSON and waits to be killed.
func runDoomedManager(t *testing.T, spec string) {
	var sp doomedSpawn
	if err := json.Unmarshal([]byte(spec), &sp); err != nil {
		t.Fatal(err)
	}
	low, high := testenv.FreePortRange(t, 1)
	pool, err := runner.NewPool(low, high, "")
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := runner.New(runner.Config{Command: sp.Command, WorkspaceRoot: sp.Root, MaxSessions: 1, StopGrace: time.Second,
		HostEnv: []string{"PATH=" + os.Getenv("PATH")}}, pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p, err := mgr.Start(t.Context(), runner.Session{ID: sp.SessionID})
	if err != nil {
		t.Fatal(err)
	}
	// Crash only once the runner serves and its shell has written the
	// member's pid: the shell dies with this process.
	if _, err := p.WaitHealthy(t.Context(), http.DefaultClient, runner.HealthPolicy{Host: "127.0.0.1", Interval: 50 * time.Millisecond, Attempts: 100}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		_, err := os.ReadFile(filepath.Join(p.Workspace, "member.pid"))
		return err
	})
	sp.PID, sp.StartTicks, sp.Port = p.PID, p.StartTicks, p.Port
	out, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(os.Stdout, "SPAWNED %s\n", out); err != nil { // the test reads the spawn from stdout
		t.Fatal(err)
	}
	<-t.Context().Done() // killed with -9 before
}

// spawnAndCrash runs a doomed manager that spawns sp's runner, kills it
// with -9 once the runner is spawned and returns the spawn.
func spawnAndCrash(t *testing.T, sp doomedSpawn) doomedSpawn {
	t.Helper()
	spec, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	mgr := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v")
	mgr.Env = append(os.Environ(), doomedManagerEnv+"="+string(spec))
	stdout, err := mgr.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	var line string
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		if l, ok := strings.CutPrefix(sc.Text(), "SPAWNED "); ok {
			line = l
			break
		}
	}
	if err := mgr.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = mgr.Wait() // killed: the error says so
	if line == "" {
		t.Fatal("the doomed manager reported no spawn")
	}
	if err := json.Unmarshal([]byte(line), &sp); err != nil {
		t.Fatal(err)
	}
	return sp
}

// waitOrphanServing waits until the lost runner's leader is gone (killed
// by Pdeathsig) and the demo runner it started serves /health, and
// returns the demo runner's pid.
func waitOrphanServing(t *testing.T, lost doomedSpawn) int {
	t.Helper()
	var orphan int
	testenv.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(lost.Root, lost.SessionID, "member.pid"))
		if err != nil {
			return err
		}
		if orphan, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return err
		}
		if pidAlive(lost.PID) {
			return fmt.Errorf("leader %d alive", lost.PID)
		}
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(lost.Port) + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return orphan
}

// sessionProcesses returns the live processes whose environment carries
// the session's SESSION_ID (every runner process of the session).
func sessionProcesses(t *testing.T, id string) []int {
	t.Helper()
	all, err := procfs.AllProcs()
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, p := range all {
		env, err := p.Environ()
		if err == nil && slices.Contains(env, runner.EnvSessionID+"="+id) && pidAlive(p.PID) {
			out = append(out, p.PID)
		}
	}
	return out
}
