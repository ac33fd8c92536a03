package reconcile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// A Running session moved to another project (gRPC UpdateSession with a
// new project_id, which the real server accepts; REST PATCH ignores it)
// kept its runner, started for the old project: the routing record still
// named the old project, so agui-proxy authorized the old project's users
// and denied the new one's, and the runner kept PROJECT_NAME=<old>. Now
// the runner is replaced: the record stops routing to it at once (and
// names the new project, so agui-proxy forgets its decisions), a new
// runner starts under the new project with the same claim and slot, and
// the session is Running again. On the event, and without one (the
// resync, the runner check). With one slot and a session waiting for it,
// the moved session keeps its slot.
func TestMovedSessionRestartsUnderNewProject(t *testing.T) {
	t.Parallel()
	inTeamB := func(r *ambientv1.CreateSessionRequest) { r.ProjectId = proto.String("team-b") }
	tests := []struct {
		name  string
		opts  replicaOpts
		event bool // the move's event reaches the replica
		// waiting creates a second session that waits for the one slot
		// while the first moves.
		waiting bool
	}{
		{name: "event", event: true},
		{name: "resync", opts: replicaOpts{resync: 200 * time.Millisecond}},
		{name: "check", opts: replicaOpts{check: 200 * time.Millisecond}},
		{name: "slot kept", opts: replicaOpts{max: 1, ports: 2}, event: true, waiting: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(tc.opts)
			s := e.create("mover", inTeamB)
			id := s.GetMetadata().GetId()
			old := e.startRunning(rp, s)
			var waitingID string
			if tc.waiting {
				w := e.create("waiting", inTeamB)
				waitingID = w.GetMetadata().GetId()
				e.handle(rp, added, w)
				testenv.Eventually(t, 10*time.Second, func() error {
					c, ok := status.Conditions(e.get(waitingID)).Get(status.CondRunnerStarted)
					if !ok || c.Reason != status.ReasonCapacityExceeded {
						return fmt.Errorf("waiting session not deferred for capacity: %s", e.get(waitingID).GetConditions())
					}
					return nil
				})
			}
			moved, err := e.client.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id, ProjectId: proto.String("team-a")})
			if err != nil {
				t.Fatal(err)
			}
			if moved.GetProjectId() != "team-a" {
				t.Fatalf("project after UpdateSession = %q, want team-a", moved.GetProjectId())
			}
			if tc.event {
				e.handle(rp, modified, moved)
				// By the time the event is handled no record routes the
				// session's clients to the old runner under the old project.
				rec, err := registry.Get(t.Context(), e.runners, id)
				if err != nil {
					t.Fatal(err)
				}
				if rec.ProjectID != "team-a" || rec.Routable() && rec.PID == old.PID {
					t.Fatalf("record after the move's event: project %q, routable %v, pid %d (old runner %d)", rec.ProjectID, rec.Routable(), rec.PID, old.PID)
				}
			}
			var now registry.Record
			testenv.Eventually(t, 10*time.Second, func() error {
				var err error
				if now, err = registry.Get(t.Context(), e.runners, id); err != nil {
					return err
				}
				if now.ProjectID != "team-a" || now.State != registry.StateRunning || now.PID == old.PID || !now.Routable() {
					return fmt.Errorf("record: project %q, state %s, pid %d (old runner %d); want project team-a with a new runner running",
						now.ProjectID, now.State, now.PID, old.PID)
				}
				if p := session.PhaseOf(e.get(id)); p != session.PhaseRunning {
					return fmt.Errorf("phase %q, want Running", p)
				}
				return nil
			})
			if pidAlive(old.PID) {
				t.Fatalf("old runner %d still alive", old.PID)
			}
			environ, err := os.ReadFile("/proc/" + strconv.Itoa(now.PID) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			if env := strings.Split(string(environ), "\x00"); !slices.Contains(env, runner.EnvProjectName+"=team-a") {
				t.Fatalf("new runner's environment lacks %s=team-a: %q", runner.EnvProjectName, env)
			}
			if c := condition(t, e.get(id), status.CondRunnerStarted); c.Status != session.StatusTrue {
				t.Fatalf("RunnerStarted = %+v", c)
			}
			if rp.mgr.Count() != 1 {
				t.Fatalf("runners = %d, want 1", rp.mgr.Count())
			}
			if tc.waiting {
				if _, err := registry.Get(t.Context(), e.runners, waitingID); !errors.Is(err, registry.ErrNotFound) {
					t.Fatalf("the waiting session took the moved session's slot: %v", err)
				}
			}
		})
	}
}

// A runner replaced for a move may take its whole stop grace to end:
// meanwhile its record routes nobody to it (the old project's users lose
// the session at once, not at its exit). A stop asked for before it ended
// wins: the session ends Stopped and no new runner starts. A shutdown
// that began meanwhile starts no new runner either: the session is handed
// back as Pending (RunnerStarted=False ProjectChanged), for whichever
// replica is alive to start under its new project.
func TestSlowMoveUnroutesAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// meanwhile happens while the old runner holds its SIGTERM.
		meanwhile func(e *env, rp *replica, id string)
		want      session.Phase
		reason    string
	}{
		{"stop wins", func(e *env, rp *replica, id string) {
			e.handle(rp, modified, e.setPhase(id, session.PhaseStopping))
		}, session.PhaseStopped, status.ReasonStopped},
		{"shutdown hands back", func(e *env, rp *replica, _ string) {
			rp.cancel()
			// The cancel only asks for the shutdown: it begins once the
			// replica's loop has returned (a sweep in progress ends
			// first). A runner that exits before that is replaced, and
			// the new runner, stopped by the shutdown a moment later, is
			// handed back with reason RunnerManagerShutdown instead: as
			// right (Pending, started again by whichever replica is
			// alive), but not the case this test is about. Under load
			// the test saw that interleaving once. So the old runner is
			// let go only once the shutdown has begun (no runner starts
			// from then on).
			testenv.Eventually(e.t, 30*time.Second, func() error {
				if rp.rec.Ready() {
					return errors.New("shutdown not begun yet")
				}
				return nil
			})
		}, session.PhasePending, status.ReasonProjectChanged},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			// The runner holds its SIGTERM until the test lets it go.
			script := fmt.Sprintf(`trap 'touch terming; while [ ! -f go ]; do sleep 0.02; done; exit 0' TERM; %s & wait $!; wait`, demoRunner)
			rp := e.replica(replicaOpts{command: []string{"/bin/sh", "-c", script}, grace: 20 * time.Second})
			s := e.create("slow mover", func(r *ambientv1.CreateSessionRequest) { r.ProjectId = proto.String("team-b") })
			id := s.GetMetadata().GetId()
			old := e.startRunning(rp, s)
			ws := filepath.Join(rp.root, id)

			moved, err := e.client.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id, ProjectId: proto.String("team-a")})
			if err != nil {
				t.Fatal(err)
			}
			e.handle(rp, modified, moved)
			rec, err := registry.Get(t.Context(), e.runners, id)
			if err != nil {
				t.Fatal(err)
			}
			if rec.ProjectID != "team-a" || rec.Routable() {
				t.Fatalf("record while the old runner stops: project %q, routable %v (%s), want team-a and no endpoint", rec.ProjectID, rec.Routable(), rec.Addr())
			}
			testenv.Eventually(t, 10*time.Second, func() error {
				_, err := os.Stat(filepath.Join(ws, "terming"))
				return err
			})
			if !pidAlive(old.PID) {
				t.Fatalf("old runner %d gone before the test let it go", old.PID)
			}
			tc.meanwhile(e, rp, id)
			touch(t, filepath.Join(ws, "go"))
			got := e.waitPhase(id, tc.want, 10*time.Second)
			if c := condition(t, got, status.CondRunnerStarted); c.Status != session.StatusFalse || c.Reason != tc.reason {
				t.Fatalf("RunnerStarted = %+v, want False %s", c, tc.reason)
			}
			e.waitNoClaim(id)
			if n := rp.mgr.Count(); n != 0 {
				t.Fatalf("runners = %d, want 0", n)
			}
		})
	}
}

// A session that waits for capacity and meanwhile moves to a project this
// deployment does not select, with no event of the move handled here (it
// may never come: dead-lettered, or made while no informer led), is not
// started when a slot frees: the start's re-read of the session checks
// the selection again. Before, it was started here while the executor of
// its new project ran it too, until the move event or the runner check
// stopped this runner.
func TestQueuedSessionMovedOutOfSelectionNotStarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sel, err := session.NewSelector([]string{"proj"}, "")
	if err != nil {
		t.Fatal(err)
	}
	rp := e.replica(replicaOpts{max: 1, selector: sel})
	first, second := e.create("first"), e.create("second")
	id1, id2 := first.GetMetadata().GetId(), second.GetMetadata().GetId()
	e.handle(rp, added, first)
	e.waitPhase(id1, session.PhaseRunning, 10*time.Second)
	e.handle(rp, added, second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !rp.rec.queue.Has(id2) {
			return errors.New("second session not queued for capacity")
		}
		return nil
	})
	// The move, not delivered to this replica.
	if _, err := e.client.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id2, ProjectId: proto.String("elsewhere")}); err != nil {
		t.Fatal(err)
	}
	e.handle(rp, modified, e.setPhase(id1, session.PhaseStopping))
	e.waitPhase(id1, session.PhaseStopped, 10*time.Second)
	// The freed slot takes the second session out of the queue under its
	// lock, and the start holds that lock until it has decided; so once
	// the session has left the queue, taking its lock waits for that
	// decision.
	testenv.Eventually(t, 10*time.Second, func() error {
		if rp.rec.queue.Has(id2) {
			return errors.New("second session still queued")
		}
		return nil
	})
	lk := rp.rec.lock(id2)
	lk.release()
	if rn := rp.rec.sup.Get(id2); rn != nil {
		t.Fatalf("a session moved to a project not selected here was started from the capacity queue (phase %q)", e.get(id2).GetPhase())
	}
	if _, err := registry.Get(t.Context(), e.runners, id2); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("moved session still claimed here: %v", err)
	}
	if p := e.get(id2).GetPhase(); p != "" && p != string(session.PhasePending) {
		t.Fatalf("moved session's phase %q written here; the executor of its project owns it", p)
	}
}
