package app_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

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
	for _, id := range badIDs {
		s, err := w.client.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		w.checkRefusedAtStart(id, svc.root, "InvalidRepos", bad[s.GetRepos()])
	}
}
