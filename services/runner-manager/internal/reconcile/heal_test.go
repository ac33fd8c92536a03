package reconcile

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// Issue 11 point 4: a phase written directly over a Running session (as
// `ambientctl sessions start` did with Pending) while its runner lives here
// is healed, on the session's event and, when no event arrives, at resync.
// Pending/Creating go back to Running with the same runner and start time;
// Stopping stops the runner; a terminal phase ends the runner and keeps the
// phase as written.
func TestPhaseDriftHealed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		phase  session.Phase // written over the Running session
		resync bool          // true: no event reaches the replica, only its resync
		want   session.Phase // phase the session ends in
		lives  bool          // the original runner still runs
	}{
		{"Pending on the event", session.PhasePending, false, session.PhaseRunning, true},
		{"Creating on the event", session.PhaseCreating, false, session.PhaseRunning, true},
		{"Pending at resync", session.PhasePending, true, session.PhaseRunning, true},
		{"Creating at resync", session.PhaseCreating, true, session.PhaseRunning, true},
		{"Stopping at resync", session.PhaseStopping, true, session.PhaseStopped, false},
		{"Failed on the event", session.PhaseFailed, false, session.PhaseFailed, false},
		{"Stopped on the event", session.PhaseStopped, false, session.PhaseStopped, false},
		{"Completed at resync", session.PhaseCompleted, true, session.PhaseCompleted, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			o := replicaOpts{}
			if tc.resync {
				o.resync = 200 * time.Millisecond
			}
			rp := e.replica(o)
			s := e.create("drift")
			id := s.GetMetadata().GetId()
			rec := e.startRunning(rp, s)
			before := e.get(id)
			// Whoever wrote the phase also moved start_time: the heal puts
			// the runner's own back.
			drifted, err := e.client.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{
				Id: id, Phase: tc.phase.Ptr(), StartTime: timestamppb.New(time.Now().Add(time.Hour)),
			})
			if err != nil {
				t.Fatal(err)
			}
			writes := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName)
			if !tc.resync {
				e.handle(rp, modified, drifted)
			}

			if tc.lives {
				got := e.waitPhase(id, tc.want, 5*time.Second)
				if !got.GetStartTime().AsTime().Equal(before.GetStartTime().AsTime()) {
					t.Errorf("start_time = %v, want the runner's %v", got.GetStartTime().AsTime(), before.GetStartTime().AsTime())
				}
				if c := condition(t, got, status.CondRunnerStarted); c.Status != session.StatusTrue {
					t.Errorf("RunnerStarted = %+v, want True", c)
				}
				now, err := registry.Get(t.Context(), e.runners, id)
				if err != nil {
					t.Fatal(err)
				}
				if now.PID != rec.PID || !pidAlive(rec.PID) || rp.mgr.Count() != 1 {
					t.Fatalf("runner pid %d (alive %v, %d runners), want the original %d still running", now.PID, pidAlive(rec.PID), rp.mgr.Count(), rec.PID)
				}
				return
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				if pidAlive(rec.PID) {
					return fmt.Errorf("runner %d still alive", rec.PID)
				}
				return nil
			})
			e.waitNoClaim(id)
			got := e.waitPhase(id, tc.want, 5*time.Second)
			if tc.phase.Terminal() {
				// A terminal phase stays exactly as written: no write at all.
				if n := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName); n != writes {
					t.Fatalf("%d status writes after the terminal phase, want none (session %v)", n-writes, got)
				}
			}
		})
	}
}

// A stale event (its phase no longer the session's) heals nothing: the
// session is re-read first. Without the re-read, a late Completed event
// would kill a running session and a late Pending one would cost a write.
func TestStaleEventHealsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("stale")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	writes := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName)
	for _, phase := range []session.Phase{session.PhasePending, session.PhaseCreating, session.PhaseCompleted, session.PhaseFailed} {
		stale := proto.CloneOf(e.get(id))
		stale.Phase = phase.Ptr()
		e.handle(rp, modified, stale)
	}
	rn := rp.rec.sup.Get(id)
	if rn == nil {
		t.Fatal("runner gone after stale events")
	}
	if stopped := rn.StopRequested(); stopped || !pidAlive(rec.PID) {
		t.Fatalf("stale event stopped the runner (stop requested %v, alive %v)", stopped, pidAlive(rec.PID))
	}
	if n := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName); n != writes {
		t.Fatalf("%d status writes after stale events, want none", n-writes)
	}
	if p := session.PhaseOf(e.get(id)); p != session.PhaseRunning {
		t.Fatalf("phase = %q", p)
	}
}
