package reconcile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/demorunner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
)

// failRepos makes the demo runner of session id on rp answer its repo
// calls with code (0: 500) until unfailRepos.
func failRepos(t *testing.T, rp *replica, id string, code int) {
	t.Helper()
	body := ""
	if code != 0 {
		body = fmt.Sprint(code)
	}
	if err := os.WriteFile(filepath.Join(rp.root, id, demorunner.ReposFailFile), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func unfailRepos(t *testing.T, rp *replica, id string) {
	t.Helper()
	if err := os.Remove(filepath.Join(rp.root, id, demorunner.ReposFailFile)); err != nil {
		t.Fatal(err)
	}
}

// repoState returns rp's repo state of session id (ok false: none).
func repoState(rp *replica, id string) (runnerRepoState, bool) {
	rp.rec.repos.mu.Lock()
	defer rp.rec.repos.mu.Unlock()
	st, ok := rp.rec.repos.byID[id]
	return st, ok
}

// repoClock is a clock for rp's retry times that moves only when the
// test says so: a loaded machine cannot make a backoff pass early.
type repoClock struct {
	rp *replica
	at time.Time // guarded by rp.rec.repos.mu
}

func stopRepoClock(rp *replica) *repoClock {
	c := &repoClock{rp: rp, at: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	rp.rec.repos.mu.Lock()
	defer rp.rec.repos.mu.Unlock()
	rp.rec.repos.now = func() time.Time { return c.at } // called with mu held
	return c
}

// retryDue moves the clock to the retry time of session id's failed
// repos, as the passing of their backoff would, and returns the backoff
// it passed.
func (c *repoClock) retryDue(t *testing.T, id string) time.Duration {
	t.Helper()
	c.rp.rec.repos.mu.Lock()
	defer c.rp.rec.repos.mu.Unlock()
	st, ok := c.rp.rec.repos.byID[id]
	if !ok || !st.failing || st.retryAt.IsZero() {
		t.Fatalf("no failed repos of %s to retry: %+v", id, st)
	}
	waited := st.retryAt.Sub(c.at)
	c.at = st.retryAt
	return waited
}

// advance moves the clock on by d.
func (c *repoClock) advance(d time.Duration) {
	c.rp.rec.repos.mu.Lock()
	defer c.rp.rec.repos.mu.Unlock()
	c.at = c.at.Add(d)
}

// almostDue moves the clock to just before the retry of session id's
// failed repos and returns the backoff that was left.
func (c *repoClock) almostDue(t *testing.T, id string) time.Duration {
	t.Helper()
	c.rp.rec.repos.mu.Lock()
	defer c.rp.rec.repos.mu.Unlock()
	st := c.rp.rec.repos.byID[id]
	left := st.retryAt.Sub(c.at)
	c.at = st.retryAt.Add(-time.Millisecond)
	return left
}

// TestRepoRetryBacksOff: a runner that keeps failing a repo change (500)
// is not called by the runner check at all, and by the resync only once
// per backoff (5 s, doubling per failure of the same repos, up to 5 min);
// the passes in between read nothing and write nothing. Other wanted repos
// are tried at once. The event path is retried by the consumer group's
// backoff: Handle calls the runner and fails whatever the resync waits
// for. Before, every runner check and every resync read the session twice
// and called the runner, forever.
func TestRepoRetryBacksOff(t *testing.T) {
	t.Parallel()
	get, write := ambientv1.SessionService_GetSession_FullMethodName, ambientv1.SessionService_UpdateSessionStatus_FullMethodName
	e := newEnv(t)
	rp := e.replica(replicaOpts{}) // no resync nor check of its own: the test runs them
	s := e.create("repos-backoff")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	clock := stopRepoClock(rp)
	failRepos(t, rp, id, 0)
	e.setRepos(id, `[{"url":"https://git.example/org/a.git","branch":"dev"}]`) // its event never comes

	pass := func(what string, run func(), wantGets int, wantFailed int64) {
		t.Helper()
		gets := e.api.CountCalls(get)
		run()
		if n := e.api.CountCalls(get) - gets; n != wantGets {
			t.Errorf("%s: %d session reads, want %d", what, n, wantGets)
		}
		if got := runnerReposOf(t, rec.Port); got.Failed != wantFailed || got.Added != 0 {
			t.Fatalf("%s: runner answered %d failed calls and %d adds, want %d and none", what, got.Failed, got.Added, wantFailed)
		}
	}
	check := func() { rp.rec.checkRunners(t.Context()) }
	resync := func() { rp.rec.resync(t.Context()) }
	for i := range 3 {
		pass(fmt.Sprintf("runner check %d", i), check, 1, 0) // its own read of the session, no runner call
	}

	pass("first resync", resync, 1, 1) // the read before the call, the call
	failed := e.get(id)
	if c := condition(t, failed, status.CondReconciled); c.Status != session.StatusFalse || c.Reason != status.ReasonRepoReconciliationFailed || !strings.Contains(c.Message, "500") {
		t.Fatalf("Reconciled = %+v, want False RepoReconciliationFailed naming the 500", c)
	}
	if st, _ := repoState(rp, id); st.tries != 1 || st.refused {
		t.Fatalf("state after the first failure: tries %d, refused %v; want 1, false", st.tries, st.refused)
	}
	for i := range 3 {
		if i == 2 {
			if left := clock.almostDue(t, id); left != 5*time.Second {
				t.Fatalf("first backoff %v, want 5s", left)
			}
		}
		writes := e.api.CountCalls(write)
		pass(fmt.Sprintf("resync %d within the backoff", i), resync, 0, 1)
		pass(fmt.Sprintf("runner check %d within the backoff", i), check, 1, 1)
		if n := e.api.CountCalls(write) - writes; n != 0 {
			t.Fatalf("%d status writes within the backoff, want none", n)
		}
	}

	// Its time come, the resync tries again, once, and waits twice as long.
	clock.retryDue(t, id)
	pass("resync when due", resync, 1, 2)
	pass("resync after it", resync, 0, 2)
	if waited := clock.retryDue(t, id); waited != 10*time.Second {
		t.Fatalf("second backoff %v, want 10s", waited)
	}
	pass("resync when due again", resync, 1, 3)

	// The event path: the group's backoff paces it, so it calls the runner
	// and fails, whatever the resync waits for.
	if err := e.handleErr(rp, e.get(id)); err == nil || group.IsTerminal(err) {
		t.Fatalf("Handle = %v, want a retryable error", err)
	}
	if got := runnerReposOf(t, rec.Port); got.Failed != 4 {
		t.Fatalf("the event called the runner %d times in all, want 4", got.Failed)
	}

	// Other wanted repos are tried at once, from the first delay again.
	e.setRepos(id, `[{"url":"https://git.example/org/b.git","branch":"dev"}]`)
	pass("resync of other repos", resync, 1, 5)
	if st, _ := repoState(rp, id); st.tries != 1 {
		t.Fatalf("tries = %d for other repos, want 1", st.tries)
	}

	// The runner recovered: applied at the next due retry.
	unfailRepos(t, rp, id)
	pass("resync within the backoff", resync, 0, 5)
	if waited := clock.retryDue(t, id); waited != 5*time.Second {
		t.Fatalf("backoff of other repos %v, want 5s", waited)
	}
	rp.rec.resync(t.Context())
	got := runnerReposOf(t, rec.Port)
	if got.Added != 1 || len(got.Repos) != 1 || got.Repos[0].URL != "https://git.example/org/b.git" {
		t.Fatalf("runner repos = %+v, want b added", got)
	}
	if c := condition(t, e.get(id), status.CondReconciled); c.Status != session.StatusTrue || c.Reason != status.ReasonSpecApplied {
		t.Fatalf("Reconciled = %+v after the runner recovered", c)
	}
	if st, _ := repoState(rp, id); st.failing {
		t.Fatalf("still failing after the apply: %+v", st)
	}
}

// TestRepoRetryDelay: 5 s after the first failure, doubling, at most 5 min.
func TestRepoRetryDelay(t *testing.T) {
	t.Parallel()
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := repoRetryDelay(i + 1); got != w {
			t.Errorf("repoRetryDelay(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := repoRetryDelay(1000); got != 5*time.Minute {
		t.Errorf("repoRetryDelay(1000) = %v, want 5m", got)
	}
}

// TestIsRefused: a runner's 4xx answer refuses the request itself, except
// 408 and 429, which say try later; a 5xx or no answer is worth a retry.
func TestIsRefused(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]bool{400: true, 404: true, 422: true, 408: false, 429: false, 500: false, 503: false} {
		err := fmt.Errorf("reconcile: %w", &runnerAnswerError{url: "http://r/repos/add", code: code})
		if got := isRefused(err); got != want {
			t.Errorf("isRefused(%d) = %v, want %v", code, got, want)
		}
	}
	if isRefused(errors.New("POST http://r/repos/add: connection refused")) {
		t.Error("no answer counted as a refusal")
	}
}

// TestRunnerRefusalNotRetried: a runner that refuses a repo change itself
// (a 4xx answer: a URL or name it does not take) is reported
// (Reconciled=False RepoReconciliationFailed with its answer) and the
// event acked: the same repos are not sent again, by the echo, the resync
// or a due retry, even once the runner would take them; other repos are.
// Before, the event failed and was retried like a 5xx.
func TestRunnerRefusalNotRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repos-refused")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	clock := stopRepoClock(rp)
	failRepos(t, rp, id, 400)

	changed := e.setRepos(id, `[{"url":"https://git.example/org/a.git","branch":"dev"}]`)
	if err := e.handleErr(rp, changed); err != nil {
		t.Fatalf("Handle = %v, want nil (reported, acked)", err)
	}
	refused := e.get(id)
	if c := condition(t, refused, status.CondReconciled); c.Status != session.StatusFalse || c.Reason != status.ReasonRepoReconciliationFailed || !strings.Contains(c.Message, "400") {
		t.Fatalf("Reconciled = %+v, want False RepoReconciliationFailed naming the 400", c)
	}
	unfailRepos(t, rp, id) // it would take them now: still not sent
	if err := e.handleErr(rp, refused); err != nil {
		t.Fatalf("Handle of the echo = %v", err)
	}
	rp.rec.resync(t.Context())
	rp.rec.checkRunners(t.Context())
	clock.advance(24 * time.Hour) // no backoff ends a refusal
	rp.rec.resync(t.Context())
	if got := runnerReposOf(t, rec.Port); got.Failed != 1 || got.Added != 0 {
		t.Fatalf("runner: %d failed calls, %d adds; want the one refusal alone", got.Failed, got.Added)
	}

	// Other repos are sent.
	changed = e.setRepos(id, `[{"url":"https://git.example/org/b.git","branch":"dev"}]`)
	if err := e.handleErr(rp, changed); err != nil {
		t.Fatalf("Handle of other repos = %v", err)
	}
	if got := runnerReposOf(t, rec.Port); got.Added != 1 || len(got.Repos) != 1 || got.Repos[0].URL != "https://git.example/org/b.git" {
		t.Fatalf("runner repos = %+v, want b added", got)
	}
	if c := condition(t, e.get(id), status.CondReconciled); c.Status != session.StatusTrue {
		t.Fatalf("Reconciled = %+v after other repos", c)
	}
}

// TestRepoNamesOutsideReposDirRefused: a repo name the platform's runner
// would turn into a path outside its repos directory (it clones to and
// rmtree's <workspace>/repos/<name>), given or derived from the URL, is
// reported (Reconciled=False InvalidRepos naming the entry) and the event
// acked, with no runner call. Before, it was sent to the runner.
func TestRepoNamesOutsideReposDirRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repos-names")
	id := s.GetMetadata().GetId()
	rec := e.startRunning(rp, s)
	for _, tc := range []struct{ repos, msg string }{
		{`[{"url":"https://git.example/org/a.git","name":".."}]`, `entry 0 (url "https://git.example/org/a.git"): name ".."`},
		{`[{"url":"https://git.example/org/a.git"},{"url":"https://git.example/org/b.git","name":"."}]`, `entry 1`},
		{`[{"url":"https://git.example/org/a.git","name":"../../etc"}]`, `name "../../etc"`},
		{`[{"url":"https://git.example/org/a.git","name":"/tmp/x"}]`, `name "/tmp/x"`},
		{`[{"url":"https://git.example/org/a.git","name":"a\\b"}]`, `holds a`},
		{`[{"url":"https://git.example/org/a.git","name":"a\u0000b"}]`, `holds a`},
		{`[{"url":"https://git.example/org/.."}]`, `name ".."`},
		{`[{"url":".git"}]`, `name "" is empty`},
	} {
		changed := e.setRepos(id, tc.repos)
		if err := e.handleErr(rp, changed); err != nil {
			t.Fatalf("repos %s: Handle = %v, want nil (reported, acked)", tc.repos, err)
		}
		c := condition(t, e.get(id), status.CondReconciled)
		if c.Status != session.StatusFalse || c.Reason != status.ReasonInvalidRepos || !strings.Contains(c.Message, tc.msg) {
			t.Fatalf("repos %s: Reconciled = %+v, want False InvalidRepos with %q", tc.repos, c, tc.msg)
		}
	}
	if got := runnerReposOf(t, rec.Port); got.Added != 0 || got.Removed != 0 || got.Failed != 0 {
		t.Fatalf("runner told of names outside its repos directory: %+v", got)
	}
}

// TestRepoURLNameOutsideReposDirRefused: a repo_url whose last element
// makes no directory name is reported, not sent.
func TestRepoURLNameOutsideReposDirRefused(t *testing.T) {
	t.Parallel()
	md := &ambientv1.ObjectReference{Id: "S1"}
	_, err := desiredRepos(&ambientv1.Session{Metadata: md, RepoUrl: proto.String("https://g/o/..")})
	if err == nil || !strings.Contains(err.Error(), `repo_url "https://g/o/..": name ".."`) {
		t.Fatalf("err = %v, want the repo_url named", err)
	}
}

// TestRepoStateForgottenWithItsRunner: the repo state of a runner whose
// session was deleted (stopSession only asks the runner to stop; no later
// event of the session comes) is dropped by the next resync. Before, it
// stayed, holding the gone runner, for as long as the replica ran.
func TestRepoStateForgottenWithItsRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	s := e.create("repos-leak", func(r *ambientv1.CreateSessionRequest) { r.RepoUrl = proto.String("https://git.example/org/a.git") })
	id := s.GetMetadata().GetId()
	e.startRunning(rp, s)
	e.handle(rp, modified, e.get(id)) // the Running echo: repo_url added, state kept
	if _, ok := repoState(rp, id); !ok {
		t.Fatal("no repo state after the repo_url was added")
	}
	if err := e.client.DeleteSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	e.handle(rp, deleted, s)
	testenv.Eventually(t, 30*time.Second, func() error {
		if rp.rec.sup.Get(id) != nil {
			return fmt.Errorf("runner of %s still here", id)
		}
		return nil
	})
	rp.rec.resync(t.Context())
	if st, ok := repoState(rp, id); ok {
		t.Fatalf("repo state of a deleted session's gone runner kept: %+v", st)
	}
}
