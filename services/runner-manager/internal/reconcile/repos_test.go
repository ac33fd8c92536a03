package reconcile

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/demorunner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// demoRepos is what a demo runner says of its repos: GET /repos/status
// and the counters of /debug/stats.
type demoRepos struct {
	Repos   []demorunner.Repo
	Added   int64
	Removed int64
	Failed  int64 // calls answered with an error (ReposFailFile)
}

// runnerReposOf reads the repos of the demo runner listening on port.
func runnerReposOf(t *testing.T, port int) demoRepos {
	t.Helper()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	var st struct {
		Repos []demorunner.Repo `json:"repos"`
	}
	getJSON(t, base+"/repos/status", &st)
	var stats demorunner.Stats
	getJSON(t, base+"/debug/stats", &stats)
	return demoRepos{Repos: st.Repos, Added: stats.ReposAdded, Removed: stats.ReposRemoved, Failed: stats.ReposFailed}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// setRepos PATCHes the session's repos (gRPC UpdateSession) and returns
// the session as the informer's MODIFIED event would carry it.
func (e *env) setRepos(id, repos string) *ambientv1.Session {
	e.t.Helper()
	s, err := e.client.UpdateSession(e.t.Context(), &ambientv1.UpdateSessionRequest{Id: id, Repos: proto.String(repos)})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// handleErr hands rp the event and returns Handle's error.
func (e *env) handleErr(rp *replica, s *ambientv1.Session) error {
	return rp.rec.Handle(e.t.Context(), group.Message{Event: e.event(modified, s), Attempt: 1})
}

func reconciledOf(t *testing.T, s *ambientv1.Session) []reconciledRepo {
	t.Helper()
	var out []reconciledRepo
	if err := json.Unmarshal([]byte(s.GetReconciledRepos()), &out); err != nil {
		t.Fatalf("reconciled_repos %q: %v", s.GetReconciledRepos(), err)
	}
	return out
}

// TestRunningSessionReposReachRunner: a Running session's repos, changed
// in the API, reach its runner through POST /repos/add and /repos/remove,
// each change once, and are reported in reconciled_repos with
// Reconciled=True; the runner is not told again of what it was started
// with, and the echo of the report calls neither the runner nor the API.
func TestRunningSessionReposReachRunner(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repos", func(r *ambientv1.CreateSessionRequest) {
		r.Repos = proto.String(`[{"url":"https://git.example/org/a.git","branch":"main"}]`)
	})
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)

	// The Running echo: the runner has its REPOS_JSON already.
	running := e.get(id)
	e.handle(rp, modified, running)
	if got := runnerReposOf(t, rec.Port); got.Added != 0 || got.Removed != 0 {
		t.Fatalf("runner told of the repos it was started with: %+v", got)
	}
	if after := e.get(id); after.ReconciledRepos != nil || !after.GetMetadata().GetUpdatedAt().AsTime().Equal(running.GetMetadata().GetUpdatedAt().AsTime()) {
		t.Fatalf("session written for an unchanged spec: reconciled_repos %q, conditions %s", after.GetReconciledRepos(), after.GetConditions())
	}

	// A repo added (no branch: ambient/<cr-name>).
	changed := e.setRepos(id, `[{"url":"https://git.example/org/a.git","branch":"main"},{"url":"https://git.example/org/b.git"}]`)
	e.handle(rp, modified, changed)
	got := runnerReposOf(t, rec.Port)
	wantBranch := "ambient/" + strings.ToLower(id)
	if got.Added != 1 || got.Removed != 0 || len(got.Repos) != 1 ||
		got.Repos[0] != (demorunner.Repo{URL: "https://git.example/org/b.git", Name: "b", Branch: wantBranch}) {
		t.Fatalf("runner repos = %+v, want one add of b on %s", got, wantBranch)
	}
	written := e.get(id)
	rr := reconciledOf(t, written)
	if len(rr) != 2 || rr[0].URL != "https://git.example/org/a.git" || rr[0].Branch != "main" || rr[0].Name != "a" ||
		rr[1].URL != "https://git.example/org/b.git" || rr[1].Branch != wantBranch || rr[1].Status != "Ready" || rr[1].ClonedAt == "" {
		t.Fatalf("reconciled_repos = %s", written.GetReconciledRepos())
	}
	if c := condition(t, written, status.CondReconciled); c.Status != session.StatusTrue || c.Reason != status.ReasonSpecApplied {
		t.Fatalf("Reconciled = %+v", c)
	}
	if session.PhaseOf(written) != session.PhaseRunning {
		t.Fatalf("phase %q after the report", written.GetPhase())
	}

	// The echo of that write (and a duplicate of it): nothing differs,
	// nothing is called or written.
	e.handle(rp, modified, written)
	e.handle(rp, modified, written)
	if again := runnerReposOf(t, rec.Port); again.Added != 1 || again.Removed != 0 {
		t.Fatalf("echo called the runner again: %+v", again)
	}
	if after := e.get(id); !after.GetMetadata().GetUpdatedAt().AsTime().Equal(written.GetMetadata().GetUpdatedAt().AsTime()) {
		t.Fatalf("echo wrote the session again: %s", after.GetConditions())
	}

	// A repo removed.
	changed = e.setRepos(id, `[{"url":"https://git.example/org/b.git"}]`)
	e.handle(rp, modified, changed)
	got = runnerReposOf(t, rec.Port)
	if got.Added != 1 || got.Removed != 1 {
		t.Fatalf("runner repos = %+v, want one removal", got)
	}
	if rr := reconciledOf(t, e.get(id)); len(rr) != 1 || rr[0].URL != "https://git.example/org/b.git" {
		t.Fatalf("reconciled_repos = %+v, want b alone", rr)
	}
}

// TestRepoReconcileRunnerFailureRetried: a runner that answers 500 leaves
// Reconciled=False RepoReconciliationFailed with its answer, and the event
// fails (the group retries it); once the runner answers 200 the retry
// applies the change, once.
func TestRepoReconcileRunnerFailureRetried(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repos-fail")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	failFile := filepath.Join(rp.root, id, demorunner.ReposFailFile)
	if err := os.WriteFile(failFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	changed := e.setRepos(id, `[{"url":"https://git.example/org/a.git","branch":"dev"}]`)
	if err := e.handleErr(rp, changed); err == nil || group.IsTerminal(err) {
		t.Fatalf("Handle = %v, want a retryable error", err)
	}
	failed := e.get(id)
	c := condition(t, failed, status.CondReconciled)
	if c.Status != session.StatusFalse || c.Reason != status.ReasonRepoReconciliationFailed || !strings.Contains(c.Message, "500") {
		t.Fatalf("Reconciled = %+v, want False RepoReconciliationFailed naming the 500", c)
	}
	if failed.ReconciledRepos != nil {
		t.Fatalf("reconciled_repos written for a change not applied: %s", failed.GetReconciledRepos())
	}
	// The echo of the failure report fails again, writing nothing new.
	if err := e.handleErr(rp, failed); err == nil {
		t.Fatal("Handle of the echo = nil while the runner refuses")
	}
	if after := e.get(id); !after.GetMetadata().GetUpdatedAt().AsTime().Equal(failed.GetMetadata().GetUpdatedAt().AsTime()) {
		t.Fatalf("the same failure written again: %s", after.GetConditions())
	}

	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	if err := e.handleErr(rp, changed); err != nil { // the retry
		t.Fatalf("retry: %v", err)
	}
	ok := e.get(id)
	if c := condition(t, ok, status.CondReconciled); c.Status != session.StatusTrue || c.Reason != status.ReasonSpecApplied {
		t.Fatalf("Reconciled = %+v after the runner recovered", c)
	}
	if rr := reconciledOf(t, ok); len(rr) != 1 || rr[0].Branch != "dev" {
		t.Fatalf("reconciled_repos = %+v", rr)
	}
	if got := runnerReposOf(t, rec.Port); got.Added != 1 || len(got.Repos) != 1 || got.Repos[0].Branch != "dev" {
		t.Fatalf("runner repos = %+v, want one add", got)
	}
}

// TestMalformedReposReported: repos that are no JSON list are reported on
// the session (Reconciled=False InvalidRepos), the event is acked, the
// runner is told nothing, and the echo writes nothing.
func TestMalformedReposReported(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repos-bad", func(r *ambientv1.CreateSessionRequest) {
		r.Repos = proto.String(`[{"url":"https://git.example/org/a.git"}]`)
	})
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)

	for _, bad := range []string{"not json", `[{"branch":"main"}]`} {
		changed := e.setRepos(id, bad)
		if err := e.handleErr(rp, changed); err != nil {
			t.Fatalf("repos %q: Handle = %v, want nil (reported, acked)", bad, err)
		}
		reported := e.get(id)
		c := condition(t, reported, status.CondReconciled)
		if c.Status != session.StatusFalse || c.Reason != status.ReasonInvalidRepos || !strings.Contains(c.Message, "repos") {
			t.Fatalf("repos %q: Reconciled = %+v, want False InvalidRepos", bad, c)
		}
		if err := e.handleErr(rp, reported); err != nil {
			t.Fatalf("echo: %v", err)
		}
		if after := e.get(id); !after.GetMetadata().GetUpdatedAt().AsTime().Equal(reported.GetMetadata().GetUpdatedAt().AsTime()) {
			t.Fatalf("repos %q: the echo wrote again: %s", bad, after.GetConditions())
		}
		if session.PhaseOf(reported) != session.PhaseRunning {
			t.Fatalf("phase %q", reported.GetPhase())
		}
	}
	if got := runnerReposOf(t, rec.Port); got.Added != 0 || got.Removed != 0 {
		t.Fatalf("runner told of malformed repos: %+v", got)
	}

	// Repaired to what the runner has: reported as reconciled, no call.
	fixed := e.setRepos(id, `[{"url":"https://git.example/org/a.git"}]`)
	e.handle(rp, modified, fixed)
	if c := condition(t, e.get(id), status.CondReconciled); c.Status != session.StatusTrue {
		t.Fatalf("Reconciled = %+v after the repair", c)
	}
	if got := runnerReposOf(t, rec.Port); got.Added != 0 || got.Removed != 0 {
		t.Fatalf("runner told of the repos it has: %+v", got)
	}
}

// TestDesiredRepos: the session's repos as its runner is told of them.
func TestDesiredRepos(t *testing.T) {
	md := &ambientv1.ObjectReference{Id: "S1"}
	cases := []struct {
		name string
		s    *ambientv1.Session
		want []repo
		err  string
	}{
		{"none", &ambientv1.Session{Metadata: md}, nil, ""},
		{"repo_url", &ambientv1.Session{Metadata: md, RepoUrl: proto.String("https://g/o/r.git")}, []repo{{URL: "https://g/o/r.git", Branch: "ambient/s1", Name: "r"}}, ""},
		{"cr name", &ambientv1.Session{Metadata: md, KubeCrName: proto.String("My-CR"), Repos: proto.String(`[{"url":"https://g/o/x/"}]`)}, []repo{{URL: "https://g/o/x/", Branch: "ambient/my-cr", Name: "x"}}, ""},
		{"name kept, last wins", &ambientv1.Session{Metadata: md, Repos: proto.String(`[{"url":"u/a","branch":"b1","name":"n"},{"url":"u/c"},{"url":"u/a","branch":"b2","name":"n"}]`)},
			[]repo{{URL: "u/a", Branch: "b2", Name: "n"}, {URL: "u/c", Branch: "ambient/s1", Name: "c"}}, ""},
		{"null", &ambientv1.Session{Metadata: md, Repos: proto.String("null")}, nil, ""},
		{"not json", &ambientv1.Session{Metadata: md, Repos: proto.String("not json")}, nil, "not a JSON list"},
		{"trailing", &ambientv1.Session{Metadata: md, Repos: proto.String(`[] []`)}, nil, "trailing"},
		{"no url", &ambientv1.Session{Metadata: md, Repos: proto.String(`[{"url":" "}]`)}, nil, "entry 0 has no url"},
	}
	for _, c := range cases {
		got, err := desiredRepos(c.s)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	d := diffRepos([]repo{{URL: "a", Branch: "m", Name: "a"}, {URL: "b", Branch: "m", Name: "b"}}, []repo{{URL: "b", Branch: "x", Name: "b"}, {URL: "c", Branch: "m", Name: "c"}})
	if fmt.Sprint(d.add, d.branch, d.remove) != "[{c m c}] [{b x b}] [{a m a}]" {
		t.Errorf("diff = %+v", d)
	}
}

// TestRepoURLAddedOnceRunning: a session with repo_url alone (REPOS_JSON
// does not carry it) gets that repo added once its runner is Running, on
// its AgenticSession branch, once.
func TestRepoURLAddedOnceRunning(t *testing.T) {
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repo-url", func(r *ambientv1.CreateSessionRequest) {
		r.RepoUrl = proto.String("https://git.example/org/only.git")
	})
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	e.handle(rp, modified, e.get(id))
	written := e.get(id)
	e.handle(rp, modified, written) // the echo
	got := runnerReposOf(t, rec.Port)
	if got.Added != 1 || len(got.Repos) != 1 || got.Repos[0].Branch != "ambient/"+strings.ToLower(id) || got.Repos[0].Name != "only" {
		t.Fatalf("runner repos = %+v, want only.git added once", got)
	}
	if rr := reconciledOf(t, written); len(rr) != 1 || rr[0].URL != "https://git.example/org/only.git" {
		t.Fatalf("reconciled_repos = %+v", rr)
	}
}
