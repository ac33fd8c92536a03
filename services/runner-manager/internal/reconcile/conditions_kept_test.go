package reconcile

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// TestRunnerWritesKeepOtherConditions: the phase writes made from a
// runner's own copy of the conditions (a phase-drift heal's Running, the
// final Stopped) keep the conditions the session carries that the runner
// does not own: the Reconciled=True SpecApplied written when its repos
// changed (repos.go), and a condition of another writer. Before, both
// writes replaced the conditions with the copy taken when the runner
// started, and those were gone.
func TestRunnerWritesKeepOtherConditions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		write session.Phase // written over the Running session
		want  session.Phase // and what runner-manager writes then
	}{
		{"phase drift heal", session.PhasePending, session.PhaseRunning},
		{"final phase", session.PhaseStopping, session.PhaseStopped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(replicaOpts{})
			s := e.create("conditions", func(r *ambientv1.CreateSessionRequest) {
				r.Repos = proto.String(`[{"url":"https://git.example/org/a.git","branch":"main"}]`)
			})
			id := s.GetMetadata().GetId()
			e.startRunning(rp, s)
			e.handle(rp, modified, e.setRepos(id, `[{"url":"https://git.example/org/b.git","branch":"main"}]`))
			reconciled := condition(t, e.get(id), status.CondReconciled)
			if reconciled.Status != session.StatusTrue || reconciled.Reason != status.ReasonSpecApplied {
				t.Fatalf("Reconciled = %+v", reconciled)
			}

			// Someone writes the phase, with a condition of their own.
			foreign := session.Condition{Type: "S3Available", Status: session.StatusTrue, Reason: "Configured", LastTransitionTime: time.Now().UTC().Truncate(time.Second)}
			conds := status.Conditions(e.get(id)).Set(foreign, time.Now()).JSON()
			changed, err := e.client.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: tc.write.Ptr(), Conditions: &conds})
			if err != nil {
				t.Fatal(err)
			}
			e.handle(rp, modified, changed)
			got := e.waitPhase(id, tc.want, 10*time.Second)

			if c := condition(t, got, status.CondReconciled); c != reconciled {
				t.Errorf("Reconciled = %+v, want it kept: %+v (conditions %s)", c, reconciled, got.GetConditions())
			}
			if c := condition(t, got, foreign.Type); c != foreign {
				t.Errorf("%s = %+v, want it kept: %+v", foreign.Type, c, foreign)
			}
			wantStarted := session.StatusTrue
			if tc.want == session.PhaseStopped {
				wantStarted = session.StatusFalse
			}
			if c := condition(t, got, status.CondRunnerStarted); c.Status != wantStarted {
				t.Errorf("RunnerStarted = %+v, want %s", c, wantStarted)
			}
		})
	}
}
