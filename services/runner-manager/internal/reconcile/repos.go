package reconcile

// Spec changes of a running session: its repos. The platform's operator
// applies a Running AgenticSession's spec changes to its live runner
// (reconcileSpecReposWithPatch: POST /repos/add for a repo added or whose
// branch changed, POST /repos/remove for a repo removed, then
// status.reconciledRepos and the Reconciled condition); runner-manager
// does the same for the runners it runs, from the session's repos field.
//
// What the runner has is kept here, per runner, not read from the
// session's reconciled_repos as the operator reads status.reconciledRepos:
// reconciled_repos outlives the runner (a stop and a start, a restart
// after a lost replica), while a new runner has exactly what its
// REPOS_JSON said. Diffing against a previous run's reconciled_repos would
// add to the new runner what it already has and remove what it never had.
// A runner never outlives this replica's memory of it (Pdeathsig, orphans
// ended at start-up, a takeover starts a new runner), so the state kept
// here is restart-safe by construction, and it is level-triggered: each
// Running event compares the session's repos with it, and nothing differs
// for the echo of our own write, so the echo calls nobody.
// reconciled_repos is what runner-manager reports, rewritten whenever it
// disagrees with the runner's repos.
//
// At the start the runner has its REPOS_JSON: that is its first state
// (supervise.Runner.StartRepos), so no repo is added a second time (a
// repo_url, which REPOS_JSON does not carry, is added then), and,
// like the operator (which writes no reconciledRepos when it creates the
// pod), nothing is written until the repos change or the session carries
// a reconciled_repos or Reconciled condition of an earlier run to correct.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/status"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/supervise"
)

// runnerCallTimeout bounds one call to a runner's repo endpoints (the
// operator's client timeout).
const runnerCallTimeout = 10 * time.Second

// repoErrBodyMax bounds how much of a runner's error answer is kept in
// the condition message.
const repoErrBodyMax = 512

// repoRetryMin and repoRetryMax bound how long the resync waits before it
// tells a runner again of repos it failed to apply: repoRetryMin after the
// first failure, doubling with each failure of the same repos up to
// repoRetryMax. Without a wait every resync (and before, every runner
// check) called a runner that keeps failing, forever: two session reads
// and a runner call each time, long after the event was dead-lettered.
const (
	repoRetryMin = 5 * time.Second
	repoRetryMax = 5 * time.Minute
)

// repoRetryDelay is the wait after the tries-th failure in a row of the
// same repos.
func repoRetryDelay(tries int) time.Duration {
	d := repoRetryMin
	for i := 1; i < tries && d < repoRetryMax; i++ {
		d *= 2
	}
	return min(d, repoRetryMax)
}

// repo is one repository of a session as its runner is told of it.
type repo = runner.Repo

// reconciledRepo is one entry of reconciled_repos, in the CRD's
// status.reconciledRepos shape, with the fields the operator writes.
type reconciledRepo struct {
	URL      string `json:"url"`
	Name     string `json:"name,omitempty"`
	Branch   string `json:"branch,omitempty"`
	Status   string `json:"status,omitempty"`
	ClonedAt string `json:"clonedAt,omitempty"`
}

// desiredRepos returns the repos of s as its runner is told of them
// (runner.SessionRepos).
func desiredRepos(s *ambientv1.Session) ([]repo, error) { return runner.SessionRepos(s) }

// repoDiff is what a runner must be told to get from one list of repos
// to another (by URL, as the operator compares them).
type repoDiff struct {
	add, branch, remove []repo
}

func (d repoDiff) empty() bool { return len(d.add)+len(d.branch)+len(d.remove) == 0 }

func diffRepos(have, want []repo) repoDiff {
	var d repoDiff
	for _, w := range want {
		i := slices.IndexFunc(have, func(h repo) bool { return h.URL == w.URL })
		switch {
		case i < 0:
			d.add = append(d.add, w)
		case have[i].Branch != w.Branch:
			d.branch = append(d.branch, w)
		}
	}
	for _, h := range have {
		if !slices.ContainsFunc(want, func(w repo) bool { return w.URL == h.URL }) {
			d.remove = append(d.remove, h)
		}
	}
	return d
}

// runnerRepos holds what each local runner has been told of its repos.
// Safe for concurrent use; an entry is only changed under its session's
// lock.
type runnerRepos struct {
	mu   sync.Mutex
	byID map[string]runnerRepoState // guarded by mu
	// now is the clock of the retry times: time.Now, which tests replace
	// to pass a backoff without waiting for it. Called with mu held.
	now func() time.Time
}

// runnerRepoState is the repos of one runner (rn: a new runner of the
// session starts from its own REPOS_JSON, not from its predecessor's),
// and the last repos it failed to apply.
type runnerRepoState struct {
	rn    *supervise.Runner
	repos []repo
	// failing says the last apply failed: failed are the repos it wanted.
	// Cleared by an apply that succeeds or by other wanted repos.
	failing bool
	failed  []repo
	// refused says the runner refused failed itself (a 4xx answer): the
	// same request fails again, so failed are not tried again at all.
	refused bool
	// tries counts the failures of failed in a row; retryAt is when the
	// resync may try them again (repoRetryDelay).
	tries   int
	retryAt time.Time
}

func newRunnerRepos() *runnerRepos {
	return &runnerRepos{byID: map[string]runnerRepoState{}, now: time.Now}
}

// get returns the repos rn has: what it was last told, else what its
// REPOS_JSON named when it was started.
func (rr *runnerRepos) get(rn *supervise.Runner) []repo {
	rr.mu.Lock()
	st, ok := rr.byID[rn.ID()]
	rr.mu.Unlock()
	if ok && st.rn == rn {
		return slices.Clone(st.repos)
	}
	return slices.Clone(rn.StartRepos())
}

// set records that rn has repos, all it was asked for: a failure recorded
// before is over.
func (rr *runnerRepos) set(rn *supervise.Runner, repos []repo) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.byID[rn.ID()] = runnerRepoState{rn: rn, repos: slices.Clone(repos)}
}

// fail records that rn has repos after an apply of want failed (refused:
// by a 4xx answer), and returns when the resync may try want again (zero
// when refused: never).
func (rr *runnerRepos) fail(rn *supervise.Runner, repos, want []repo, refused bool) time.Time {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	st, ok := rr.byID[rn.ID()]
	tries := 1
	if ok && st.rn == rn && st.failing && sameRepoSet(st.failed, want) {
		tries = st.tries + 1
	}
	st = runnerRepoState{rn: rn, repos: slices.Clone(repos), failing: true, failed: slices.Clone(want), refused: refused, tries: tries}
	if !refused {
		st.retryAt = rr.now().Add(repoRetryDelay(tries))
	}
	rr.byID[rn.ID()] = st
	return st.retryAt
}

// held reports whether want, rn's wanted repos, are the ones its last
// apply failed on and must not be tried yet: refused by the runner, or,
// unless event, before their retry time. An event is retried with the
// consumer group's own backoff, so it does not wait for this one.
func (rr *runnerRepos) held(rn *supervise.Runner, want []repo, event bool) bool {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	st, ok := rr.byID[rn.ID()]
	if !ok || st.rn != rn || !st.failing || !sameRepoSet(st.failed, want) {
		return false
	}
	return st.refused || (!event && rr.now().Before(st.retryAt))
}

// prune drops the state of every runner that is no longer its session's
// (current: the session's runner here, nil when none). A runner whose
// session was deleted, or that ended with no later event of its session,
// is forgotten by no event (Handle forgets the state of the session it
// handles), and its state would hold the gone *Runner for good.
func (rr *runnerRepos) prune(current func(id string) *supervise.Runner) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for id, st := range rr.byID {
		if current(id) != st.rn {
			delete(rr.byID, id)
		}
	}
}

// forget drops the state of session id unless it is rn's (nil: drop it):
// the runner it described is gone.
func (rr *runnerRepos) forget(id string, rn *supervise.Runner) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if st, ok := rr.byID[id]; ok && (rn == nil || st.rn != rn) {
		delete(rr.byID, id)
	}
}

// reconcileRepos applies the repos of s, a Running session, to rn, its
// runner here, and reports them (reconciled_repos, condition Reconciled).
// event says an event of the session asks (Handle), not the resync.
// Callers hold the session's lock. A runner that cannot be told (not
// reachable, a 5xx answer) is reported (Reconciled=False
// RepoReconciliationFailed) and returned as an error: the event is
// retried with the consumer group's backoff, as the operator's reconcile
// is, and the resync tries the same repos again only after a backoff of
// its own (runnerRepos.held). A runner that refuses the request itself (a
// 4xx answer: a URL or name it does not take) is reported the same way and
// nil is returned: the same repos would be refused again, so they are not
// retried; other repos are. A repos field that cannot be read is reported
// (InvalidRepos) and not retried: only a new value helps.
func (r *Reconciler) reconcileRepos(ctx context.Context, log *slog.Logger, rn *supervise.Runner, s *ambientv1.Session, event bool) error {
	if !r.reposPending(rn, s, event) {
		return nil // the echo of our own write ends here, with no API call
	}
	have := r.repos.get(rn)
	// Something to do: act on the session as it is now, not on a stale
	// or redelivered event.
	fresh, err := r.api.GetSession(ctx, rn.ID())
	if err != nil {
		return wrapRetry("read session", rn.ID(), err)
	}
	if session.PhaseOf(fresh) != session.PhaseRunning {
		return nil // its next event decides
	}
	want, err := desiredRepos(fresh)
	if err != nil {
		cond := invalidRepos(err)
		if hasCondition(fresh, cond) {
			return nil
		}
		log.Warn("session repos cannot be read; the runner keeps its repos", slog.String(logkey.Err, err.Error()))
		return r.writeReconciled(ctx, fresh, cond, nil)
	}
	if r.repos.held(rn, want, event) {
		return nil // failed before, reported; see held
	}
	d := diffRepos(have, want)
	if d.empty() {
		r.repos.set(rn, have) // a failure of other repos is over
		return r.reportRepos(ctx, log, fresh, have, "")
	}
	applied, err := r.applyRepos(ctx, log, rn, have, d)
	if err != nil {
		// What succeeded is not sent again.
		refused := isRefused(err)
		retryAt := r.repos.fail(rn, applied, want, refused)
		werr := r.writeReconciled(ctx, fresh, session.Condition{Type: status.CondReconciled, Status: session.StatusFalse,
			Reason: status.ReasonRepoReconciliationFailed, Message: "Failed to reconcile repos: " + err.Error()}, nil)
		if refused {
			log.Warn("runner refused the repos; not retried until they change", slog.String(logkey.Err, err.Error()))
			return werr // acked: only other repos help
		}
		log.Warn("repos not applied to the runner", slog.String(logkey.Err, err.Error()), slog.Time("resync_retry_at", retryAt))
		return errors.Join(wrapRetry("reconcile repos of", rn.ID(), err), werr)
	}
	r.repos.set(rn, applied)
	msg := fmt.Sprintf("Reconciled %d repos (added: %d, removed: %d, branch changed: %d)", len(applied), len(d.add), len(d.remove), len(d.branch))
	log.Info("repos applied to the runner", slog.Int("added", len(d.add)), slog.Int("removed", len(d.remove)), slog.Int("branch_changed", len(d.branch)))
	return r.reportRepos(ctx, log, fresh, applied, msg)
}

// reposPending reports whether s, a Running session as an event or the
// resync's list shows it, has something for reconcileRepos to do on rn,
// its runner here: repos rn was not told of, or a report s lacks (see
// needsReport), or a repos field that cannot be read and is not reported
// yet; not repos rn failed to apply that are held (runnerRepos.held:
// refused, or, unless event, waiting for their retry time). It calls
// neither the API nor the runner: the resync asks it of every session
// with a runner here, and the echo of a report ends here.
func (r *Reconciler) reposPending(rn *supervise.Runner, s *ambientv1.Session, event bool) bool {
	if session.PhaseOf(s) != session.PhaseRunning {
		return false
	}
	if _, _, serving := rn.Serving(); !serving || rn.StopRequested() || rn.Lost() {
		return false // its supervisor decides what comes next
	}
	want, err := desiredRepos(s)
	if err != nil {
		return !hasCondition(s, invalidRepos(err)) // else reported already
	}
	if r.repos.held(rn, want, event) {
		return false
	}
	have := r.repos.get(rn)
	return !diffRepos(have, want).empty() || needsReport(s, have)
}

// applyRepos tells rn of d (adds, then branch changes, then removals, the
// operator's order) and returns the repos rn has afterwards: have with
// every call that succeeded applied. It stops at the first failure.
func (r *Reconciler) applyRepos(ctx context.Context, log *slog.Logger, rn *supervise.Runner, have []repo, d repoDiff) ([]repo, error) {
	base := "http://" + net.JoinHostPort(r.cfg.Health.Host, strconv.Itoa(rn.Port()))
	client := &http.Client{Timeout: runnerCallTimeout}
	out := slices.Clone(have)
	for _, a := range slices.Concat(d.add, d.branch) {
		body := map[string]string{"url": a.URL, "branch": a.Branch, "name": a.Name}
		if err := postRunner(ctx, client, base+"/repos/add", body); err != nil {
			return out, err
		}
		log.Debug("repo added to the runner", slog.String("url", a.URL), slog.String("branch", a.Branch))
		if i := slices.IndexFunc(out, func(h repo) bool { return h.URL == a.URL }); i >= 0 {
			out[i] = a
		} else {
			out = append(out, a)
		}
	}
	for _, rm := range d.remove {
		if err := postRunner(ctx, client, base+"/repos/remove", map[string]string{"name": rm.Name}); err != nil {
			return out, err
		}
		log.Debug("repo removed from the runner", slog.String("url", rm.URL))
		out = slices.DeleteFunc(out, func(h repo) bool { return h.URL == rm.URL })
	}
	return out, nil
}

// runnerAnswerError is a runner's answer other than 200 to a repo call.
type runnerAnswerError struct {
	url  string
	code int
	body string
}

func (e *runnerAnswerError) Error() string {
	return fmt.Sprintf("POST %s: runner answered %d: %s", e.url, e.code, e.body)
}

// isRefused reports whether err is a runner's 4xx answer: it refuses the
// request itself (ambient-runner answers 400 for a missing URL, FastAPI
// 422 for a body it cannot read), so the same request fails again. A 5xx
// (a clone that failed, its context not ready yet), no answer, or a 408
// or 429 (the runner or a proxy in front of it busy, by their meaning)
// may pass on a retry.
func isRefused(err error) bool {
	var ae *runnerAnswerError
	if !errors.As(err, &ae) || ae.code == http.StatusRequestTimeout || ae.code == http.StatusTooManyRequests {
		return false
	}
	return ae.code >= 400 && ae.code < 500
}

// postRunner POSTs body as JSON to url; anything but 200 is an error
// carrying the start of the runner's answer (a *runnerAnswerError when the
// runner answered).
func postRunner(ctx context.Context, client *http.Client, url string, body map[string]string) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", url, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("build %s request: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below or abandoned; nothing to report
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, repoErrBodyMax))
	if resp.StatusCode != http.StatusOK {
		return &runnerAnswerError{url: url, code: resp.StatusCode, body: strings.TrimSpace(string(msg))}
	}
	return nil
}

// reportRepos writes repos as s's reconciled_repos with Reconciled=True
// (message msg, or a summary), unless s says so already. A session that
// carries neither reconciled_repos nor a Reconciled condition and whose
// runner was told nothing (msg "") gets nothing: the runner has what it
// was started with, and the operator writes nothing then either.
func (r *Reconciler) reportRepos(ctx context.Context, log *slog.Logger, s *ambientv1.Session, repos []repo, msg string) error {
	if msg == "" && !needsReport(s, repos) {
		return nil
	}
	if msg == "" {
		msg = fmt.Sprintf("Reconciled %d repos", len(repos))
	}
	js, err := reconciledJSON(s.GetReconciledRepos(), repos, time.Now())
	if err != nil {
		return err
	}
	if err := r.writeReconciled(ctx, s, session.Condition{Type: status.CondReconciled, Status: session.StatusTrue, Reason: status.ReasonSpecApplied, Message: msg}, &js); err != nil {
		return err
	}
	log.Debug("reconciled repos written", slog.Int("repos", len(repos)))
	return nil
}

// needsReport reports whether s must be told that its runner has repos,
// with nothing to tell the runner: s carries a reconciled_repos or a
// Reconciled condition (of an earlier run, or of a failure) that says
// otherwise. A session with neither gets nothing (see reportRepos).
func needsReport(s *ambientv1.Session, repos []repo) bool {
	cur, hasCond := status.Conditions(s).Get(status.CondReconciled)
	if s.ReconciledRepos == nil && !hasCond {
		return false
	}
	return !hasCond || cur.Status != session.StatusTrue || cur.Reason != status.ReasonSpecApplied || !sameRepos(s.GetReconciledRepos(), repos)
}

// writeReconciled sets cond among s's conditions and writes them, with
// reconciled (nil: not written). The same condition already there is not
// written again: the retries of a failing runner, and the echoes of the
// report, would otherwise write it at every turn.
func (r *Reconciler) writeReconciled(ctx context.Context, s *ambientv1.Session, cond session.Condition, reconciled *string) error {
	id := s.GetMetadata().GetId()
	if reconciled == nil && hasCondition(s, cond) {
		return nil
	}
	conds := status.Conditions(s)
	u := status.Update{Conditions: conds.Set(cond, time.Now()), ReconciledRepos: reconciled}
	if err := r.status.Write(ctx, id, u); err != nil {
		return wrapRetry("write reconciled repos of", id, err)
	}
	return nil
}

// invalidRepos is the condition reporting err, a repos field that
// cannot be read.
func invalidRepos(err error) session.Condition {
	return session.Condition{Type: status.CondReconciled, Status: session.StatusFalse, Reason: status.ReasonInvalidRepos, Message: err.Error()}
}

// hasCondition reports whether s carries c (type, status, reason and
// message; not its time).
func hasCondition(s *ambientv1.Session, c session.Condition) bool {
	cur, ok := status.Conditions(s).Get(c.Type)
	return ok && cur.Status == c.Status && cur.Reason == c.Reason && cur.Message == c.Message
}

// sameRepoSet reports whether a and b list the same repos (url, branch
// and name; in any order).
func sameRepoSet(a, b []repo) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// sameRepos reports whether js, a reconciled_repos value, lists exactly
// repos (url, branch and name; in any order).
func sameRepos(js string, repos []repo) bool {
	var cur []reconciledRepo
	if err := json.Unmarshal([]byte(js), &cur); err != nil {
		return false
	}
	listed := make([]repo, len(cur))
	for i, c := range cur {
		listed[i] = repo{URL: c.URL, Branch: c.Branch, Name: c.Name}
	}
	return sameRepoSet(listed, repos)
}

// reconciledJSON returns repos as reconciled_repos: the operator's entries
// (url, name, branch, status Ready, clonedAt), keeping the clonedAt of an
// entry prev (the current value) already lists with the same URL and
// branch.
func reconciledJSON(prev string, repos []repo, now time.Time) (string, error) {
	var old []reconciledRepo
	_ = json.Unmarshal([]byte(prev), &old) // an unreadable value is replaced whole
	out := make([]reconciledRepo, 0, len(repos))
	for _, rp := range repos {
		e := reconciledRepo{URL: rp.URL, Name: rp.Name, Branch: rp.Branch, Status: "Ready", ClonedAt: now.UTC().Format(time.RFC3339)}
		if i := slices.IndexFunc(old, func(o reconciledRepo) bool { return o.URL == rp.URL && o.Branch == rp.Branch }); i >= 0 && old[i].ClonedAt != "" {
			e.ClonedAt = old[i].ClonedAt
		}
		out = append(out, e)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode reconciled repos: %w", err)
	}
	return string(b), nil
}
