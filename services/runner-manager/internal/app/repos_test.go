package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/demorunner"
)

// TestRunningSessionReposChangeReachesRunner: the repos of a Running
// session, changed in the API, reach its real runner process through the
// real service and its events (echoes included): one POST /repos/add per
// change, reconciled_repos and Reconciled=True written, and the echo of
// that write calls the runner no more. A runner that answers 500 leaves
// Reconciled=False RepoReconciliationFailed; the event is retried and the
// change applied once the runner answers 200. Before, a running runner
// kept the repos of its REPOS_JSON and nothing was reported.
func TestRunningSessionReposChangeReachesRunner(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	svc := w.start("rm-repos", 1)
	id := w.create("repos")
	w.waitAll([]string{id}, "Running", 20*time.Second)
	rec, err := w.record(id)
	if err != nil {
		t.Fatal(err)
	}
	stats := func() demorunner.Stats {
		t.Helper()
		var st demorunner.Stats
		if err := getJSONInto(t.Context(), "http://127.0.0.1:"+strconv.Itoa(rec.Port)+"/debug/stats", &st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	if _, err := w.client.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id,
		Repos: proto.String(`[{"url":"https://git.example/org/a.git","branch":"main"}]`)}); err != nil {
		t.Fatal(err)
	}
	w.waitReconciled(id, session.StatusTrue, "SpecApplied")
	// ADDED, MODIFIED Creating, Running, the repos change and the echo
	// of the report (one event when the watch sent the change after the
	// report landed): all handled and acked, and the echo called nobody.
	w.waitQueueDrained()
	if st := stats(); st.ReposAdded != 1 || st.ReposRemoved != 0 {
		t.Fatalf("runner calls = %d adds, %d removals; want one add", st.ReposAdded, st.ReposRemoved)
	}
	// Creating, Running, the report.
	w.checkStatusWrites(svc, map[string]int{"Creating": 1, "Running": 1, "": 1})
	var rr []struct{ URL, Branch, Status string }
	if err := json.Unmarshal([]byte(w.get(id).GetReconciledRepos()), &rr); err != nil || len(rr) != 1 || rr[0].URL != "https://git.example/org/a.git" || rr[0].Branch != "main" || rr[0].Status != "Ready" {
		t.Fatalf("reconciled_repos = %+v (%v)", rr, err)
	}

	// The runner refuses: reported, retried, applied once it accepts.
	failFile := filepath.Join(svc.root, id, demorunner.ReposFailFile)
	if err := os.WriteFile(failFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := w.client.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id,
		Repos: proto.String(`[{"url":"https://git.example/org/b.git","branch":"main"}]`)}); err != nil {
		t.Fatal(err)
	}
	w.waitReconciled(id, session.StatusFalse, "RepoReconciliationFailed")
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	w.waitReconciled(id, session.StatusTrue, "SpecApplied")
	// The change, the echoes of the failure and of the report.
	w.waitQueueDrained()
	if st := stats(); st.ReposAdded != 2 || st.ReposRemoved != 1 {
		t.Fatalf("runner calls = %d adds, %d removals; want 2 and 1", st.ReposAdded, st.ReposRemoved)
	}
	// The failure written once (its retries find it written), then the
	// report.
	w.checkStatusWrites(svc, map[string]int{"Creating": 1, "Running": 1, "": 3})
	if s := w.get(id); session.PhaseOf(s) != session.PhaseRunning {
		t.Fatalf("phase %q", s.GetPhase())
	}
}

func (w *world) get(id string) *ambientv1.Session {
	w.t.Helper()
	s, err := w.client.GetSession(w.t.Context(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// waitReconciled waits until session id's Reconciled condition has
// status and reason.
func (w *world) waitReconciled(id, status, reason string) {
	w.t.Helper()
	testenv.Eventually(w.t, 60*time.Second, func() error {
		s := w.get(id)
		cs, err := session.ParseConditions(s.GetConditions())
		if err != nil {
			return err
		}
		c, ok := cs.Get("Reconciled")
		if !ok {
			return errors.New("no Reconciled condition")
		}
		if c.Status != status || c.Reason != reason {
			return fmt.Errorf("Reconciled %s %s (%s), want %s %s", c.Status, c.Reason, c.Message, status, reason)
		}
		return nil
	})
}

func getJSONInto(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
