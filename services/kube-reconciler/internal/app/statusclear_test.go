package app

import (
	"fmt"
	"testing"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestStatusWriteBackClearsDroppedFields: the real UpdateSessionStatus keeps
// every field a request leaves unset, so a field the operator drops from the
// CR's status (a past run's SDK session, restart count, repos, workflow, a
// condition, a message) must be sent cleared, or the API shows it forever.
// Phase and times cannot be cleared by that request: the start time stays.
func TestStatusWriteBackClearsDroppedFields(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "clr1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Creating")
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Running", "startTime": "2026-01-02T03:04:05Z", "sdkSessionId": "sdk-1",
		"sdkRestartCount": int64(2), "reconciledRepos": []any{map[string]any{"url": "u"}}, "reconciledWorkflow": map[string]any{"gitUrl": "w"},
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "message": "running"},
			map[string]any{"type": "PodCreated", "status": "True"}}})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error {
		if s.GetSdkSessionId() != "sdk-1" || s.GetReconciledWorkflow() == "" {
			return fmt.Errorf("running status not written yet: sdk_session_id %q", s.GetSdkSessionId())
		}
		return nil
	})
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Completed", "startTime": "2026-01-02T03:04:05Z",
		"completionTime": "2026-01-02T04:00:00Z", "conditions": []any{map[string]any{"type": "Ready", "status": "False"}}})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, "Completed") })
	h.quiesce(t, r)
	got, err := h.cl.GetSession(t.Context(), ks.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSdkSessionId() != "" || got.GetSdkRestartCount() != 0 || got.GetReconciledRepos() != "" || got.GetReconciledWorkflow() != "" {
		t.Errorf("dropped fields kept: sdk_session_id %q, sdk_restart_count %d, reconciled_repos %q, reconciled_workflow %q",
			got.GetSdkSessionId(), got.GetSdkRestartCount(), got.GetReconciledRepos(), got.GetReconciledWorkflow())
	}
	if c, ok := session.FindCondition(got.GetConditions(), "Ready"); !ok || c.Status != session.StatusFalse || c.Message != "" {
		t.Errorf("Ready = %+v (found %v), want False without the cleared message; conditions %s", c, ok, got.GetConditions())
	}
	if _, ok := session.FindCondition(got.GetConditions(), "PodCreated"); ok {
		t.Errorf("PodCreated, dropped by the operator, kept: conditions %s", got.GetConditions())
	}
	if got.GetStartTime() == nil {
		t.Error("start_time cleared: the write-back never sends it unset")
	}
}

// TestStatusWriteBackKeepsOthersConditions: the real UpdateSessionStatus
// replaces the whole conditions list, and the informer (EventsPublished) and
// kube-reconciler's event path (Reconciled) write conditions on the same
// sessions, read-modify-write. The write-back merges: a CR status change
// keeps their conditions, and their write alone (the CR unchanged) causes no
// write-back at all.
func TestStatusWriteBackKeepsOthersConditions(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "oth1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Running")
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Running",
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Running"}}})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error {
		if _, ok := session.FindCondition(s.GetConditions(), "Ready"); !ok {
			return fmt.Errorf("conditions %s: no Ready yet", s.GetConditions())
		}
		return nil
	})
	h.quiesce(t, r)
	// Another writer adds its conditions the way the informer does: read
	// the session, append, write the whole list.
	cur, err := h.cl.GetSession(t.Context(), ks.id)
	if err != nil {
		t.Fatal(err)
	}
	conds, err := session.ParseConditions(cur.GetConditions())
	if err != nil {
		t.Fatal(err)
	}
	conds = append(conds,
		session.Condition{Type: session.ConditionEventsPublished, Status: session.StatusFalse, Reason: session.ReasonObjectTooLarge, Message: "too large"},
		session.Condition{Type: "Reconciled", Status: session.StatusTrue, Reason: "Applied"})
	js := conds.JSON()
	if _, err := h.cl.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: ks.id, Conditions: &js}); err != nil {
		t.Fatal(err)
	}
	h.quiesce(t, r)
	calls := h.api.CallCount(updateStatusMethod)
	check := func(what string) {
		t.Helper()
		got, err := h.cl.GetSession(t.Context(), ks.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{session.ConditionEventsPublished, "Reconciled"} {
			if _, ok := session.FindCondition(got.GetConditions(), typ); !ok {
				t.Errorf("%s: %s of another writer lost: conditions %s", what, typ, got.GetConditions())
			}
		}
	}
	check("after the other writer's write")

	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Running",
		"conditions": []any{map[string]any{"type": "Ready", "status": "False", "reason": "Stalled"}}})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error {
		if c, _ := session.FindCondition(s.GetConditions(), "Ready"); c.Status != session.StatusFalse {
			return fmt.Errorf("conditions %s: Ready not False yet", s.GetConditions())
		}
		return nil
	})
	h.quiesce(t, r)
	check("after a CR status change")
	if n := h.api.CallCount(updateStatusMethod); n != calls+1 {
		t.Errorf("UpdateSessionStatus calls since the other writer's write = %d, want 1 (the CR's change)", n-calls)
	}
}
