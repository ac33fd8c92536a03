package status

import (
	"testing"
	"time"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// TestFromCROperatorStatus: a status as the session operator writes it
// (ambient-code/platform, components/operator: a Get, the status map
// changed, UpdateStatus of the whole object; times time.RFC3339 in UTC,
// conditions {type, status, reason, message, lastTransitionTime}, the
// reconciled repos and workflow as objects) is stored by the kube-apiserver
// under the operator's CRD and reaches every UpdateSessionStatusRequest
// field the API has. The fields the API has no place for
// (observedGeneration, lastActivityTime, stoppedReason) are the only ones
// left out.
func TestFromCROperatorStatus(t *testing.T) {
	t.Parallel()
	env := kube.Env(t)
	ns := crFixture(t, env, "opstatus", 1)
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(ns)
	cur, err := crs.Get(t.Context(), "s0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Object["status"] = map[string]any{
		"phase":              "Stopped",
		"observedGeneration": cur.GetGeneration(),
		"startTime":          "2026-01-02T03:04:05Z",
		"completionTime":     "2026-01-02T04:05:06Z",
		"stoppedReason":      "user",
		"lastActivityTime":   "2026-01-02T04:00:00Z",
		"sdkSessionId":       "sdk-7",
		"sdkRestartCount":    int64(2),
		"reconciledRepos": []any{map[string]any{"url": "https://git/a", "name": "a", "branch": "main",
			"clonedAt": "2026-01-02T03:04:06Z", "status": "Ready"}},
		"reconciledWorkflow": map[string]any{"gitUrl": "https://git/w", "branch": "main", "path": "wf",
			"status": "Active", "appliedAt": "2026-01-02T03:04:07Z"},
		"conditions": []any{
			map[string]any{"type": "Ready", "status": "False", "reason": "UserStopped", "message": "Session stopped by user",
				"lastTransitionTime": "2026-01-02T04:05:06Z"},
			map[string]any{"type": "PodCreated", "status": "False", "reason": "UserStopped", "message": "Pod deleted by user stop request",
				"lastTransitionTime": "2026-01-02T04:05:06Z"},
		},
	}
	if _, err := crs.UpdateStatus(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("the operator's status refused by its CRD: %v", err)
	}
	stored, err := crs.Get(t.Context(), "s0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, bad := FromCR(stored)
	if len(bad) > 0 {
		t.Errorf("fields FromCR could not read: %v", bad)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if req.GetId() != "S0" || req.GetKubeCrUid() != string(stored.GetUID()) || req.GetKubeNamespace() != ns {
		t.Errorf("id %q uid %q namespace %q", req.GetId(), req.GetKubeCrUid(), req.GetKubeNamespace())
	}
	if req.GetPhase() != "Stopped" || !req.GetStartTime().AsTime().Equal(at("2026-01-02T03:04:05Z")) ||
		!req.GetCompletionTime().AsTime().Equal(at("2026-01-02T04:05:06Z")) {
		t.Errorf("phase %q start %v completion %v", req.GetPhase(), req.GetStartTime().AsTime(), req.GetCompletionTime().AsTime())
	}
	if req.GetSdkSessionId() != "sdk-7" || req.GetSdkRestartCount() != 2 {
		t.Errorf("sdk session %q restarts %d", req.GetSdkSessionId(), req.GetSdkRestartCount())
	}
	wantJSON := map[string]struct{ got, want string }{
		"reconciled_repos": {req.GetReconciledRepos(),
			`[{"branch":"main","clonedAt":"2026-01-02T03:04:06Z","name":"a","status":"Ready","url":"https://git/a"}]`},
		"reconciled_workflow": {req.GetReconciledWorkflow(),
			`{"appliedAt":"2026-01-02T03:04:07Z","branch":"main","gitUrl":"https://git/w","path":"wf","status":"Active"}`},
		"conditions": {req.GetConditions(), `[` +
			`{"lastTransitionTime":"2026-01-02T04:05:06Z","message":"Session stopped by user","reason":"UserStopped","status":"False","type":"Ready"},` +
			`{"lastTransitionTime":"2026-01-02T04:05:06Z","message":"Pod deleted by user stop request","reason":"UserStopped","status":"False","type":"PodCreated"}]`},
	}
	for field, c := range wantJSON {
		if !jsonEqual(c.got, c.want) {
			t.Errorf("%s = %s, want %s", field, c.got, c.want)
		}
	}
	// Written back, the session compares equal: no second write.
	written := &ambientv1.Session{Phase: req.Phase, StartTime: req.StartTime, CompletionTime: req.CompletionTime,
		SdkSessionId: req.SdkSessionId, SdkRestartCount: req.SdkRestartCount, Conditions: req.Conditions,
		ReconciledRepos: req.ReconciledRepos, ReconciledWorkflow: req.ReconciledWorkflow, KubeCrUid: req.KubeCrUid, KubeNamespace: req.KubeNamespace}
	if Differs(conditionsFor(req, written), written) {
		t.Error("Differs = true for the session the request made")
	}
}
