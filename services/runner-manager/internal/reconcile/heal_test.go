package reconcile

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
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
		phase  string // written over the Running session
		resync bool   // true: no event reaches the replica, only its resync
		want   string // phase the session ends in
		lives  bool   // the original runner still runs
	}{
		{"Pending on the event", PhasePending, false, PhaseRunning, true},
		{"Creating on the event", PhaseCreating, false, PhaseRunning, true},
		{"Pending at resync", PhasePending, true, PhaseRunning, true},
		{"Creating at resync", PhaseCreating, true, PhaseRunning, true},
		{"Stopping at resync", PhaseStopping, true, PhaseStopped, false},
		{"Failed on the event", PhaseFailed, false, PhaseFailed, false},
		{"Stopped on the event", PhaseStopped, false, PhaseStopped, false},
		{"Completed at resync", PhaseCompleted, true, PhaseCompleted, false},
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
				Id: id, Phase: proto.String(tc.phase), StartTime: timestamppb.New(time.Now().Add(time.Hour)),
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
				if c := condition(t, got, CondRunnerStarted); c.Status != StatusTrue {
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
			if terminal(tc.phase) {
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
	for _, phase := range []string{PhasePending, PhaseCreating, PhaseCompleted, PhaseFailed} {
		stale := proto.CloneOf(e.get(id))
		stale.Phase = proto.String(phase)
		e.handle(rp, modified, stale)
	}
	rn := rp.rec.localRun(id)
	if rn == nil {
		t.Fatal("runner gone after stale events")
	}
	rn.mu.Lock()
	stopped := rn.stopped
	rn.mu.Unlock()
	if stopped || !pidAlive(rec.PID) {
		t.Fatalf("stale event stopped the runner (stop requested %v, alive %v)", stopped, pidAlive(rec.PID))
	}
	if n := e.api.CountCalls(ambientv1.SessionService_UpdateSessionStatus_FullMethodName); n != writes {
		t.Fatalf("%d status writes after stale events, want none", n-writes)
	}
	if p := e.get(id).GetPhase(); p != PhaseRunning {
		t.Fatalf("phase = %q", p)
	}
}
