package reconcile

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// At capacity, freed slots go to the waiting projects in turn: project A
// fills both slots of the replica and queues six more sessions, then
// project B queues one; B's session gets one of the next two freed
// slots instead of waiting behind all of A's.
func TestCapacityProjectsTakeTurns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{max: 2})
	in := func(p string) sessionOpt {
		return func(r *ambientv1.CreateSessionRequest) { r.ProjectId = proto.String(p) }
	}
	deferred := func(id string) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() error {
			s := e.get(id)
			if c, ok := status.Conditions(s).Get(status.CondRunnerStarted); !ok || c.Reason != status.ReasonCapacityExceeded || !rp.rec.queue.Has(id) {
				return fmt.Errorf("session %s not queued: phase %q conditions %s", id, s.GetPhase(), s.GetConditions())
			}
			return nil
		})
	}
	var running []string
	for i := range 2 {
		s := e.create(fmt.Sprintf("a-running-%d", i), in("team-a"))
		e.startRunning(rp, s)
		running = append(running, s.GetMetadata().GetId())
	}
	var waiting []string
	for i := range 6 {
		s := e.create(fmt.Sprintf("a-waiting-%d", i), in("team-a"))
		e.handle(rp, added, s)
		waiting = append(waiting, s.GetMetadata().GetId())
		deferred(waiting[i]) // one at a time: their order is their queue order
	}
	b := e.create("b", in("team-b"))
	idB := b.GetMetadata().GetId()
	e.handle(rp, added, b)
	deferred(idB)

	all := append(append(slices.Clone(running), waiting...), idB)
	// runningNow waits until two sessions run and the queue holds the
	// others, and returns the two.
	runningNow := func() []string {
		t.Helper()
		var got []string
		testenv.Eventually(t, 10*time.Second, func() error {
			got = got[:0]
			for _, id := range all {
				if session.PhaseOf(e.get(id)) == session.PhaseRunning {
					got = append(got, id)
				}
			}
			if len(got) != 2 || rp.rec.starting.Load() != 0 {
				return fmt.Errorf("running %v, %d starts in flight; want 2 running, none in flight", got, rp.rec.starting.Load())
			}
			return nil
		})
		return got
	}
	for i, id := range running {
		e.handle(rp, modified, e.setPhase(id, session.PhaseStopping))
		e.waitPhase(id, session.PhaseStopped, 5*time.Second)
		got := runningNow()
		t.Logf("after freed slot %d: running %v", i+1, got)
		if i == 1 && !slices.Contains(got, idB) {
			t.Fatalf("two freed slots went to %v; project B's session %s still waits (queued: %d) behind project A's", got, idB, rp.rec.queue.Len())
		}
	}
}

// With LOCAL_MAX_SESSIONS_PER_PROJECT, one project cannot take every slot
// of the replica: project A starts three sessions on a replica of four
// slots with a cap of two per project, its third waits (CapacityExceeded,
// the project's cap in the message) although a slot is free, and project
// B's session takes that slot. When one of A's runners ends, A's waiting
// session starts; B's slot stays B's.
func TestCapacityPerProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{max: 4, perProject: 2})
	in := func(p string) sessionOpt {
		return func(r *ambientv1.CreateSessionRequest) { r.ProjectId = proto.String(p) }
	}
	var a []string
	for i := range 2 {
		s := e.create(fmt.Sprintf("a-running-%d", i), in("team-a"))
		e.startRunning(rp, s)
		a = append(a, s.GetMetadata().GetId())
	}
	third := e.create("a-third", in("team-a"))
	idThird := third.GetMetadata().GetId()
	e.handle(rp, added, third)
	testenv.Eventually(t, 5*time.Second, func() error {
		s := e.get(idThird)
		c, ok := status.Conditions(s).Get(status.CondRunnerStarted)
		if !ok || c.Reason != status.ReasonCapacityExceeded || !rp.rec.queue.Has(idThird) {
			return fmt.Errorf("project A's third session not queued: phase %q conditions %s", s.GetPhase(), s.GetConditions())
		}
		if !strings.Contains(c.Message, `project "team-a" has 2 of its 2 sessions`) {
			return fmt.Errorf("capacity message %q does not name the project's cap", c.Message)
		}
		return nil
	})
	if p := session.PhaseOf(e.get(idThird)); p != session.PhasePending && p != session.PhaseNone {
		t.Fatalf("project A's third session: phase %q, want it waiting (Pending or none)", p)
	}
	if free := rp.rec.sup.Free(); free != 2 {
		t.Fatalf("replica slots free: %d, want 2 (the cap, not the replica, holds A's third session)", free)
	}
	b := e.create("b", in("team-b"))
	e.startRunning(rp, b)
	if !rp.rec.queue.Has(idThird) {
		t.Fatal("project A's third session left the queue when B's session started")
	}

	e.handle(rp, modified, e.setPhase(a[0], session.PhaseStopping))
	e.waitPhase(a[0], session.PhaseStopped, 5*time.Second)
	e.waitPhase(idThird, session.PhaseRunning, 10*time.Second)
	if p := session.PhaseOf(e.get(b.GetMetadata().GetId())); p != session.PhaseRunning {
		t.Fatalf("project B's session: phase %q, want Running", p)
	}
}

// A session waiting for its project's cap that moves to a project with
// room starts on its move event, as a session of its new project: it does
// not wait for a runner of its old project to end.
func TestCapacityPerProjectQueuedSessionMoves(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{max: 4, perProject: 1})
	in := func(p string) sessionOpt {
		return func(r *ambientv1.CreateSessionRequest) { r.ProjectId = proto.String(p) }
	}
	e.startRunning(rp, e.create("a-running", in("team-a")))
	waiting := e.create("a-waiting", in("team-a"))
	id := waiting.GetMetadata().GetId()
	e.handle(rp, added, waiting)
	testenv.Eventually(t, 5*time.Second, func() error {
		if p, ok := rp.rec.queue.ProjectOf(id); !ok || p != "team-a" {
			return fmt.Errorf("session not queued under team-a (%q, %v)", p, ok)
		}
		return nil
	})
	moved, err := e.client.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id, ProjectId: proto.String("team-b")})
	if err != nil {
		t.Fatal(err)
	}
	e.handle(rp, modified, moved)
	e.waitPhase(id, session.PhaseRunning, 10*time.Second)
	if rp.rec.queue.Has(id) {
		t.Fatal("the moved session runs and still waits in the queue")
	}
}
