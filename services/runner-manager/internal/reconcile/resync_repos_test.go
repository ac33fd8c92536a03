package reconcile

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/demorunner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// TestResyncAppliesRepoChanges: a Running session's repo change whose
// event never reached this replica (dead-lettered, lost) reaches its
// runner at the next resync, as the event would have applied it: POST
// /repos/add once, reconciled_repos and Reconciled=True written. A pass
// over a session whose repos the runner has calls neither the runner nor
// the API beyond the resync's list, and writes nothing. Before, the
// change waited for the session's next event. The periodic runner check
// leaves repos alone (TestRepoRetryBacksOff).
func TestResyncAppliesRepoChanges(t *testing.T) {
	t.Parallel()
	get, write := ambientv1.SessionService_GetSession_FullMethodName, ambientv1.SessionService_UpdateSessionStatus_FullMethodName
	for _, tc := range []struct {
		name string
		pass func(context.Context, *replica)
		gets int // the pass's own reads of an unchanged session
	}{
		{"resync", func(ctx context.Context, rp *replica) { rp.rec.resync(ctx) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rp := e.replica(replicaOpts{}) // no resync nor check of its own: the test runs them
			s := e.create("lost repo event", func(r *ambientv1.CreateSessionRequest) {
				r.Repos = proto.String(`[{"url":"https://git.example/org/a.git","branch":"main"}]`)
			})
			id := s.GetMetadata().GetId()
			rec := e.startRunning(rp, s)

			unchanged := func(what string, added int64) {
				t.Helper()
				gets, writes := e.api.CountCalls(get), e.api.CountCalls(write)
				tc.pass(t.Context(), rp)
				if got := runnerReposOf(t, rec.Port); got.Added != added || got.Removed != 0 {
					t.Fatalf("%s: runner repos %+v, want %d adds and no removal", what, got, added)
				}
				if n := e.api.CountCalls(get) - gets; n != tc.gets {
					t.Fatalf("%s: %d session reads, want %d", what, n, tc.gets)
				}
				if n := e.api.CountCalls(write) - writes; n != 0 {
					t.Fatalf("%s: %d status writes, want none", what, n)
				}
			}
			unchanged("pass over the repos the runner started with", 0)

			// The change; its event never comes.
			e.setRepos(id, `[{"url":"https://git.example/org/a.git","branch":"main"},{"url":"https://git.example/org/b.git","branch":"dev"}]`)
			tc.pass(t.Context(), rp)
			got := runnerReposOf(t, rec.Port)
			if got.Added != 1 || got.Removed != 0 || len(got.Repos) != 1 ||
				got.Repos[0] != (demorunner.Repo{URL: "https://git.example/org/b.git", Name: "b", Branch: "dev"}) {
				t.Fatalf("runner repos = %+v, want one add of b on dev", got)
			}
			written := e.get(id)
			if rr := reconciledOf(t, written); len(rr) != 2 || rr[1].URL != "https://git.example/org/b.git" || rr[1].Branch != "dev" {
				t.Fatalf("reconciled_repos = %s", written.GetReconciledRepos())
			}
			if c := condition(t, written, status.CondReconciled); c.Status != session.StatusTrue || c.Reason != status.ReasonSpecApplied {
				t.Fatalf("Reconciled = %+v", c)
			}

			unchanged("pass after the change was applied", 1)
		})
	}
}
