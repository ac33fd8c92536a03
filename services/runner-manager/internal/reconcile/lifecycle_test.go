package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

const (
	added    = eventsv1.EventType_EVENT_TYPE_ADDED
	modified = eventsv1.EventType_EVENT_TYPE_MODIFIED
	deleted  = eventsv1.EventType_EVENT_TYPE_DELETED
)

// Acceptance 1: a Pending session gets a runner within a second: Creating
// then Running written, endpoint registered, /health answered on it,
// workspace and logs present, environment exactly allow-list + session vars.
func TestPendingSessionGetsRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("My Demo", func(r *ambientv1.CreateSessionRequest) { r.Repos = proto.String(`[{"url":"https://x/y"}]`) })
	id := s.GetMetadata().GetId()
	start := time.Now()
	e.handle(rp, added, s)
	got := e.waitPhase(id, session.PhaseRunning, 10*time.Second)
	t.Logf("event to Running: %v", time.Since(start))
	if got.GetStartTime() == nil {
		t.Fatal("Running without start_time")
	}
	for _, typ := range []string{status.CondProcessSpawned, status.CondHealthCheckPassed, status.CondRunnerStarted} {
		if c := condition(t, got, typ); c.Status != session.StatusTrue {
			t.Fatalf("condition %s = %+v, want True", typ, c)
		}
	}
	rec, err := registry.Get(t.Context(), e.runners, id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Owner != "rm-0" || rec.Host != "127.0.0.1" || rec.Port == 0 || rec.PID == 0 || rec.State != registry.StateRunning || rec.ProjectID != "proj" {
		t.Fatalf("record = %+v", rec)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+rec.Addr()+"/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health = %d", resp.StatusCode)
	}
	ws := filepath.Join(rp.root, id)
	for _, f := range []string{runner.StdoutLog, runner.StderrLog} {
		if _, err := os.Stat(filepath.Join(ws, f)); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(rec.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for kv := range strings.SplitSeq(strings.TrimRight(string(raw), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var names []string
	for k := range env {
		names = append(names, k)
	}
	slices.Sort(names)
	want := []string{"AGENTIC_SESSION_NAME", "AGENTIC_SESSION_NAMESPACE", "AGUI_HOST", "AGUI_PORT", "BOSS_AGENT_NAME", "BOSS_SPACE", "GITHUB_TOKEN", "HOME", "INITIAL_PROMPT",
		"INITIAL_PROMPT_FILE", "LLM_MAX_TOKENS", "LLM_MODEL", "LLM_TEMPERATURE", "PATH", "PROJECT_NAME", "REPOS_JSON", "SESSION_ID", "WORKSPACE_PATH"}
	if !slices.Equal(names, want) {
		t.Fatalf("runner env = %v\nwant %v", names, want)
	}
	checks := map[string]string{"SESSION_ID": id, "AGUI_PORT": strconv.Itoa(rec.Port), "WORKSPACE_PATH": ws, "BOSS_AGENT_NAME": "my-demo",
		"INITIAL_PROMPT": "hello world", "INITIAL_PROMPT_FILE": filepath.Join(ws, runner.PromptFile), "LLM_MODEL": "sonnet", "LLM_TEMPERATURE": "0.70", "LLM_MAX_TOKENS": "4000", "PROJECT_NAME": "proj",
		"REPOS_JSON": `[{"url":"https://x/y"}]`, "AGENTIC_SESSION_NAME": strings.ToLower(id), "AGUI_HOST": "127.0.0.1"}
	for k, v := range checks {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

// A MODIFIED event of a Pending session with no runner anywhere (a start
// after Stopped: POST /start) spawns one, as an ADDED does; while its
// runner has not answered /health the session is Creating with
// ProcessSpawned=True, HealthCheckPassed=Unknown (Polling) and
// RunnerStarted=Unknown.
func TestModifiedPendingSpawnsAndCreatingConditions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gate := filepath.Join(t.TempDir(), "healthy")
	// Not listening until the gate file exists: Creating lasts as long as
	// the test needs.
	script := fmt.Sprintf(`while [ ! -f %s ]; do sleep 0.05; done; exec %s`, gate, demoRunner)
	rp := e.replica(replicaOpts{command: []string{"/bin/sh", "-c", script},
		health: runner.HealthPolicy{Host: "127.0.0.1", Interval: 50 * time.Millisecond, Attempts: 400}})
	s := e.create("started again")
	id := s.GetMetadata().GetId()
	e.handle(rp, modified, e.setPhase(id, session.PhasePending))
	got := e.waitPhase(id, session.PhaseCreating, 5*time.Second)
	for typ, want := range map[string]string{status.CondProcessSpawned: session.StatusTrue,
		status.CondHealthCheckPassed: session.StatusUnknown, status.CondRunnerStarted: session.StatusUnknown} {
		if c := condition(t, got, typ); c.Status != want {
			t.Errorf("while Creating: %s = %+v, want status %s", typ, c, want)
		}
	}
	if c := condition(t, got, status.CondHealthCheckPassed); c.Reason != "Polling" {
		t.Errorf("while Creating: HealthCheckPassed reason %q, want Polling", c.Reason)
	}
	touch(t, gate)
	e.waitPhase(id, session.PhaseRunning, 20*time.Second)
}

// Terminal phases are never spawned: an ADDED or MODIFIED event of a
// Stopped, Completed or Failed session with no runner starts nothing,
// claims nothing and writes nothing.
func TestTerminalPhasesNeverSpawn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	for _, phase := range []session.Phase{session.PhaseStopped, session.PhaseCompleted, session.PhaseFailed} {
		id := e.create("over: " + string(phase)).GetMetadata().GetId()
		s := e.setPhase(id, phase)
		writes := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName)
		e.handle(rp, added, s)
		e.handle(rp, modified, s)
		if _, running := rp.mgr.Get(id); running {
			t.Errorf("%s session got a runner", phase)
		}
		if rec, err := registry.Get(t.Context(), e.runners, id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s session: record %+v (%v), want none", phase, rec, err)
		}
		if n := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName) - writes; n != 0 {
			t.Errorf("%s session: %d status writes, want none", phase, n)
		}
		if p := session.PhaseOf(e.get(id)); p != phase {
			t.Errorf("phase %q, want %q kept", p, phase)
		}
	}
}

// Acceptance 2: Stopping -> SIGTERM (SIGKILL after the grace for a runner
// that ignores it) -> Stopped with completion_time; port, claim released.
func TestStopping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		command  func(string) []string
		minDelay time.Duration
	}{
		{"demo runner exits on SIGTERM", func(string) []string { return []string{demoRunner} }, 0},
		{"runner ignoring SIGTERM is killed after the grace", func(string) []string {
			// The demo runner exits on SIGTERM; the shell that started it does
			// not, so the group lives on until SIGKILL.
			return []string{"/bin/sh", "-c", `trap "" TERM; ` + demoRunner + ` & while :; do sleep 0.1; done`}
		}, 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(replicaOpts{command: tc.command(""), grace: 500 * time.Millisecond, max: 1})
			s := e.create("stop me")
			id := s.GetMetadata().GetId()
			rec := e.startRunning(rp, s)
			start := time.Now()
			e.handle(rp, modified, e.setPhase(id, session.PhaseStopping))
			got := e.waitPhase(id, session.PhaseStopped, 5*time.Second)
			if d := time.Since(start); d < tc.minDelay {
				t.Fatalf("stopped after %v, want >= grace %v", d, tc.minDelay)
			}
			if got.GetCompletionTime() == nil {
				t.Fatal("Stopped without completion_time")
			}
			if pidAlive(rec.PID) {
				t.Fatalf("runner %d still alive", rec.PID)
			}
			e.waitNoClaim(id)
			testenv.Eventually(t, 5*time.Second, func() error {
				if n := rp.mgr.Pool().InUse(); n != 0 {
					return fmt.Errorf("%d ports in use", n)
				}
				return nil
			})
		})
	}
}

// Stopping with no runner anywhere: Stopped at once.
func TestStoppingWithoutRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("never ran")
	id := s.GetMetadata().GetId()
	e.handle(rp, modified, e.setPhase(id, session.PhaseStopping))
	got := e.waitPhase(id, session.PhaseStopped, 10*time.Second)
	if got.GetCompletionTime() == nil {
		t.Fatal("no completion_time")
	}
}

// Acceptance 3: exit 0 -> Completed; exit 3 -> Failed with the code and the
// stderr tail; never healthy -> Failed HealthCheckTimeout and killed; a
// missing command -> Failed ProcessSpawnFailed.
func TestRunnerOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command []string
		phase   session.Phase
		reason  string
		message []string
	}{
		{"exit 0", []string{"/bin/sh", "-c", "exit 0"}, session.PhaseCompleted, status.ReasonCompleted, nil},
		{"exit 3", []string{"/bin/sh", "-c", `for i in $(seq 1 70); do echo "err line $i" >&2; done; exit 3`}, session.PhaseFailed, status.ReasonProcessExited,
			[]string{"ProcessExited: exit code 3", "err line 70", "err line 21"}},
		{"never healthy", []string{"/bin/sh", "-c", "echo $$ > pid; exec sleep 60"}, session.PhaseFailed, status.ReasonHealthCheckTimeout, []string{"HealthCheckTimeout"}},
		{"missing command", []string{"/nonexistent/runner", "--flag"}, session.PhaseFailed, status.ReasonProcessSpawnFailed, []string{"ProcessSpawnFailed: "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(replicaOpts{command: tc.command, health: runner.HealthPolicy{Host: "127.0.0.1", Interval: 50 * time.Millisecond, Attempts: 6}})
			s := e.create(tc.name)
			id := s.GetMetadata().GetId()
			e.handle(rp, added, s)
			got := e.waitPhase(id, tc.phase, 5*time.Second)
			if got.GetCompletionTime() == nil {
				t.Fatal("no completion_time")
			}
			c := condition(t, got, status.CondRunnerStarted)
			if c.Reason != tc.reason || c.Status != session.StatusFalse {
				t.Fatalf("RunnerStarted = %+v, want reason %s", c, tc.reason)
			}
			for _, m := range tc.message {
				if !strings.Contains(c.Message, m) {
					t.Fatalf("message %q lacks %q", c.Message, m)
				}
			}
			if tc.name == "exit 3" && strings.Contains(c.Message, "err line 20\n") {
				t.Fatalf("tail longer than 50 lines: %q", c.Message)
			}
			// None of these runners passed its health check: the final
			// conditions must not say it is still being polled.
			if h := condition(t, got, status.CondHealthCheckPassed); h.Status != session.StatusFalse {
				t.Fatalf("HealthCheckPassed = %+v, want False", h)
			}
			if tc.reason == status.ReasonHealthCheckTimeout {
				// The original wrote the timeout on HealthCheckPassed too.
				if h := condition(t, got, status.CondHealthCheckPassed); h.Reason != status.ReasonHealthCheckTimeout || h.Status != session.StatusFalse {
					t.Fatalf("HealthCheckPassed = %+v, want False with reason %s", h, status.ReasonHealthCheckTimeout)
				}
				b, err := os.ReadFile(filepath.Join(rp.root, id, "pid"))
				if err != nil {
					t.Fatal(err)
				}
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				testenv.Eventually(t, 5*time.Second, func() error {
					if pidAlive(pid) {
						return fmt.Errorf("unhealthy runner %d not killed", pid)
					}
					return nil
				})
			}
			e.waitNoClaim(id)
		})
	}
}

// Acceptance 4: LOCAL_MAX_SESSIONS and port exhaustion are reported on the
// session (condition RunnerStarted=False with the reason, phase unchanged)
// and the session starts once capacity frees up.
func TestCapacity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		max    int
		ports  int
		reason string
	}{
		{"max sessions", 1, 2, status.ReasonCapacityExceeded},
		{"port exhaustion", 5, 1, status.ReasonNoPortAvailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(replicaOpts{max: tc.max, ports: tc.ports})
			first, second := e.create("first"), e.create("second")
			id1, id2 := first.GetMetadata().GetId(), second.GetMetadata().GetId()
			e.handle(rp, added, first)
			e.waitPhase(id1, session.PhaseRunning, 10*time.Second)
			e.handle(rp, added, second)
			testenv.Eventually(t, 10*time.Second, func() error {
				s := e.get(id2)
				c, ok := status.Conditions(s).Get(status.CondRunnerStarted)
				if !ok || c.Reason != tc.reason || c.Status != session.StatusFalse || s.GetPhase() != "" {
					return fmt.Errorf("second: phase %q conditions %s", s.GetPhase(), s.GetConditions())
				}
				return nil
			})
			// The echo of the condition write changes nothing.
			e.handle(rp, modified, e.get(id2))
			if _, err := registry.Get(t.Context(), e.runners, id2); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("deferred session holds a claim: %v", err)
			}
			e.handle(rp, modified, e.setPhase(id1, session.PhaseStopping))
			e.waitPhase(id1, session.PhaseStopped, 5*time.Second)
			got := e.waitPhase(id2, session.PhaseRunning, 5*time.Second)
			if c := condition(t, got, status.CondRunnerStarted); c.Status != session.StatusTrue {
				t.Fatalf("RunnerStarted = %+v", c)
			}
		})
	}
}

// idMapAPI presents a real session under another id (one the in-memory API
// would never generate) to reach the spawn path with hostile ids.
type idMapAPI struct {
	sessionAPI
	fake, real string
}

func (a idMapAPI) GetSession(ctx context.Context, id string) (*ambientv1.Session, error) {
	if id == a.fake {
		id = a.real
	}
	s, err := a.sessionAPI.GetSession(ctx, id)
	if err == nil && id == a.real {
		s.Metadata.Id = a.fake
	}
	return s, err
}

func (a idMapAPI) UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	if req.GetId() == a.fake {
		req = proto.CloneOf(req)
		req.Id = a.real
	}
	return a.sessionAPI.UpdateSessionStatus(ctx, req)
}

// Acceptance 5: an id like ../../etc never creates anything outside the
// workspace root; the session is Failed with the reason.
func TestEscapingSessionID(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"../../etc", "..", "a/../../b", "/abs"} {
		t.Run(bad, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.create("evil")
			api := idMapAPI{sessionAPI: e.client, fake: bad, real: s.GetMetadata().GetId()}
			rp := e.replica(replicaOpts{api: api})
			parent := filepath.Dir(rp.root)
			before, err := os.ReadDir(parent)
			if err != nil {
				t.Fatal(err)
			}
			fake := proto.CloneOf(s)
			fake.Metadata.Id = bad
			e.handle(rp, added, fake)
			got := e.waitPhase(s.GetMetadata().GetId(), session.PhaseFailed, 10*time.Second)
			if c := condition(t, got, status.CondProcessSpawned); c.Reason != status.ReasonInvalidSessionID {
				t.Fatalf("ProcessSpawned = %+v", c)
			}
			after, err := os.ReadDir(parent)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before) {
				t.Fatalf("entries next to the root changed: %v -> %v", before, after)
			}
			if entries, _ := os.ReadDir(rp.root); len(entries) != 0 {
				t.Fatalf("root not empty: %v", entries)
			}
			e.waitNoClaim(bad)
		})
	}
}

// Acceptance 7: duplicate and replayed events never start a second runner.
func TestDuplicateAndReplayedEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Every spawn appends a line to spawns in the workspace.
	rp := e.replica(replicaOpts{command: []string{"/bin/sh", "-c", "echo x >> spawns; exec " + demoRunner}})
	other := e.replica(replicaOpts{member: "rm-1", command: []string{"/bin/sh", "-c", "echo x >> spawns; exec " + demoRunner}})
	s := e.create("dup")
	id := s.GetMetadata().GetId()
	ev := e.event(added, s)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() { // owned by this test, waited below
			defer wg.Done()
			target := rp
			if i%2 == 1 {
				target = other
			}
			if err := target.rec.Handle(t.Context(), group.Message{Event: ev, Attempt: uint64(1 + i/2)}); err != nil {
				t.Errorf("handle: %v", err)
			}
		}()
	}
	wg.Wait()
	e.waitPhase(id, session.PhaseRunning, 10*time.Second)
	// Echoes of our own writes and a replay of the original event.
	e.handle(rp, modified, e.get(id))
	e.handle(other, modified, e.get(id))
	e.handle(other, added, s)
	spawns := func() int {
		n := 0
		for _, root := range []string{rp.root, other.root} {
			b, _ := os.ReadFile(filepath.Join(root, id, "spawns")) // absent on the replica that did not run it
			n += strings.Count(string(b), "x")
		}
		return n
	}
	if n := spawns(); n != 1 {
		t.Fatalf("spawns = %d, want 1", n)
	}
	// After the session ended, a replayed ADDED (phase "") starts nothing.
	e.handle(rp, modified, e.setPhase(id, session.PhaseStopping))
	e.waitPhase(id, session.PhaseStopped, 5*time.Second)
	e.waitNoClaim(id)
	e.handleRedelivered(rp, added, s)
	e.handleRedelivered(other, added, s)
	if n := spawns(); n != 1 {
		t.Fatalf("spawns after replay = %d, want 1", n)
	}
	if p := session.PhaseOf(e.get(id)); p != session.PhaseStopped {
		t.Fatalf("phase after replay = %q", p)
	}
}

// DELETED kills the runner and releases the claim without writing a phase.
func TestDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("bye")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	if err := e.client.DeleteSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	e.handle(rp, deleted, s)
	e.waitNoClaim(id)
	if pidAlive(rec.PID) {
		t.Fatalf("runner %d alive after delete", rec.PID)
	}
}

// A stop for a session that runs on a live peer reaches the owner through
// its registry record.
func TestStopOnPeer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	owner := e.replica(replicaOpts{member: "owner"})
	peer := e.replica(replicaOpts{member: "peer"})
	s := e.create("cross")
	id := s.GetMetadata().GetId()
	e.handle(owner, added, s)
	e.waitPhase(id, session.PhaseRunning, 10*time.Second)
	e.handle(peer, modified, e.setPhase(id, session.PhaseStopping))
	e.waitPhase(id, session.PhaseStopped, 5*time.Second)
	e.waitNoClaim(id)
}

// Sessions not selected are ignored.
func TestSelector(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sel, err := session.NewSelector([]string{"other"}, "")
	if err != nil {
		t.Fatal(err)
	}
	rp := e.replica(replicaOpts{selector: sel})
	s := e.create("not mine")
	e.handle(rp, added, s)
	if _, err := registry.Get(t.Context(), e.runners, s.GetMetadata().GetId()); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unselected session claimed: %v", err)
	}
}

// An API outage while the phase is written: the runner keeps running and
// the sweep writes the phase once the API answers again.
func TestPhaseWriteRetriedAfterOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("outage")
	id := s.GetMetadata().GetId()
	e.api.FailNext(ambientv1.SessionService_UpdateSessionStatus_FullMethodName, 12, codes.Unavailable)
	e.handle(rp, added, s)
	got := e.waitPhase(id, session.PhaseRunning, 15*time.Second)
	if got.GetStartTime() == nil {
		t.Fatal("no start_time")
	}
	if rp.mgr.Count() != 1 {
		t.Fatalf("runners = %d", rp.mgr.Count())
	}
}

// A session whose labels move it to another executor loses its runner here
// at once (on the event) without a phase write; with no event on this
// replica, the resync or the runner check finds it.
func TestDeselectedSessionLosesRunner(t *testing.T) {
	t.Parallel()
	local := func(r *ambientv1.CreateSessionRequest) { r.Labels = proto.String(`{"executor":"local"}`) }
	relabel := func(e *env, id string) *ambientv1.Session {
		s, err := e.client.UpdateSession(e.t.Context(), &ambientv1.UpdateSessionRequest{Id: id, Labels: proto.String(`{"executor":"kube"}`)})
		if err != nil {
			e.t.Fatal(err)
		}
		return s
	}
	sel, err := session.NewSelector([]string{"*"}, "executor=local")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("event", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		rp := e.replica(replicaOpts{selector: sel})
		s := e.create("moves", local)
		id := s.GetMetadata().GetId()
		rec := e.startRunning(rp, s)
		e.handle(rp, modified, relabel(e, id))
		e.waitNoClaim(id)
		testenv.Eventually(t, 5*time.Second, func() error {
			if pidAlive(rec.PID) {
				return fmt.Errorf("runner %d still alive", rec.PID)
			}
			return nil
		})
		if p := session.PhaseOf(e.get(id)); p != session.PhaseRunning {
			t.Fatalf("phase = %q: the deselected session's status was written", p)
		}
	})

	// No event reaches the replica; the resync or, with no resync, the
	// runner check finds the session deselected.
	for name, o := range map[string]replicaOpts{
		"resync": {selector: sel, resync: 200 * time.Millisecond},
		"check":  {selector: sel, check: 200 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(o)
			s := e.create("moves quietly", local)
			id := s.GetMetadata().GetId()
			e.startRunning(rp, s)
			relabel(e, id)
			e.waitNoClaim(id)
			if p := session.PhaseOf(e.get(id)); p != session.PhaseRunning {
				t.Fatalf("phase = %q: the deselected session's status was written", p)
			}
		})
	}
}

// TestSpawnFailureAfterARunRewritesAllConditions: a session that ran
// (HealthCheckPassed=True) and is started again from Stopped, but whose
// spawn fails (missing command, or an id that escapes the workspace root),
// is Failed with all three runner conditions describing the failed run:
// none says True. Before the fix the previous run's HealthCheckPassed=True
// (and, for InvalidSessionID, RunnerStarted=True) stayed.
func TestSpawnFailureAfterARunRewritesAllConditions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		fakeID  string // "" : the real id
		command []string
		reason  string
	}{
		{"missing command", "", []string{"/nonexistent/runner"}, status.ReasonProcessSpawnFailed},
		{"escaping id", "../../etc", nil, status.ReasonInvalidSessionID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			s := e.create("ran before")
			id := s.GetMetadata().GetId()
			runOnce(e, s)
			again := e.setPhase(id, session.PhasePending) // POST /start
			o := replicaOpts{member: "rm-1", command: tc.command}
			if tc.fakeID != "" {
				o.api = idMapAPI{sessionAPI: e.client, fake: tc.fakeID, real: id}
				again = proto.CloneOf(again)
				again.Metadata.Id = tc.fakeID
			}
			e.handle(e.replica(o), added, again)
			got := e.waitPhase(id, session.PhaseFailed, 5*time.Second)
			for _, typ := range []string{status.CondProcessSpawned, status.CondHealthCheckPassed, status.CondRunnerStarted} {
				if c := condition(t, got, typ); c.Status != session.StatusFalse || c.Reason != tc.reason {
					t.Errorf("%s = %+v, want False with reason %s", typ, c, tc.reason)
				}
			}
		})
	}
}

// runOnce runs s to Running on a replica of its own, stops it (Stopped)
// and shuts that replica down: the session carries a whole run's
// conditions.
func runOnce(e *env, s *ambientv1.Session) {
	e.t.Helper()
	id := s.GetMetadata().GetId()
	rp := e.replica(replicaOpts{member: "rm-0"})
	e.startRunning(rp, s)
	if c := condition(e.t, e.get(id), status.CondHealthCheckPassed); c.Status != session.StatusTrue {
		e.t.Fatalf("first run: HealthCheckPassed = %+v, want True", c)
	}
	e.handle(rp, modified, e.setPhase(id, session.PhaseStopping))
	e.waitPhase(id, session.PhaseStopped, 5*time.Second)
	e.waitNoClaim(id)
	rp.stop(e.t)
}
