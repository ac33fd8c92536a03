package app_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestRunnerNotStartedWithReposOutsideItsDir: a session whose repos name a
// repo outside the runner's repos directory (the platform's runner clones
// REPOS_JSON to <workspace>/repos/<name> at its start, unchecked) or are no
// JSON list gets no runner: Failed, its three runner conditions False with
// reason InvalidRepos and the fault, as kube-reconciler makes no
// AgenticSession of it (InvalidSpec); a session created after it runs.
// Before, the runner was started with them.
func TestRunnerNotStartedWithReposOutsideItsDir(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.start("rm-badrepos", 2)
	ctx := t.Context()
	bad := map[string]string{
		`[{"url":"https://git.example/o/a.git","name":"../escape"}]`: `name "../escape"`,
		`not json`: "repos: not a JSON list",
	}
	var badIDs []string
	for repos := range bad {
		s, err := w.client.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "bad repos", ProjectId: proto.String("proj"),
			Repos: proto.String(repos)})
		if err != nil {
			t.Fatal(err)
		}
		badIDs = append(badIDs, s.GetMetadata().GetId())
	}
	good := w.create("after them")
	w.waitAll([]string{good}, "Running", 30*time.Second)
	w.waitAll(badIDs, "Failed", 20*time.Second)
	for _, id := range badIDs {
		s, err := w.client.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		conds, err := session.ParseConditions(s.GetConditions())
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{"ProcessSpawned", "HealthCheckPassed", "RunnerStarted"} {
			c, ok := conds.Get(typ)
			if !ok || c.Status != session.StatusFalse || c.Reason != "InvalidRepos" {
				t.Errorf("%s of repos %s: %s = %+v, want False InvalidRepos", id, s.GetRepos(), typ, c)
			}
		}
		if c, _ := conds.Get("ProcessSpawned"); !strings.Contains(c.Message, bad[s.GetRepos()]) {
			t.Errorf("ProcessSpawned message %q: want %q", c.Message, bad[s.GetRepos()])
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			if rec, err := w.record(id); err == nil {
				return fmt.Errorf("a runner record for the refused session: %+v", rec)
			}
			return nil
		})
		if got := runnersBySession(svc.root)[id]; len(got) > 0 {
			t.Errorf("runner processes %v for the refused session", got)
		}
	}
}
