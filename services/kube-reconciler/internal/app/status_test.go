package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestStatusWriteBack: status set on the CR through the status subresource,
// as the operator does, reaches the API with no session event involved, and
// UpdateSessionStatus is called exactly once per real change: CR updates that
// change nothing in the status, and the echoes of our own writes, call nothing.
func TestStatusWriteBack(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "st1", nil, nil)
	ctx := t.Context()
	name := unique("st")
	p := h.project(t, name)
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(p.GetMetadata().GetId())})
	if err != nil {
		t.Fatal(err)
	}
	id, crName := s.GetMetadata().GetId(), lower(s.GetKubeCrName())
	h.waitCR(t, name, crName, nil)
	// First real change: kube_cr_uid and kube_namespace.
	testenv.Eventually(t, wait, func() error {
		if got, _ := h.cl.GetSession(ctx, id); got.GetKubeNamespace() != name {
			return fmt.Errorf("kube_namespace = %q", got.GetKubeNamespace())
		}
		return nil
	})
	h.quiesce(t, r)
	base := h.api.CallCount(updateStatusMethod)
	if base != 1 {
		t.Errorf("UpdateSessionStatus calls after create = %d, want 1", base)
	}

	steps := []struct {
		status map[string]any
		phase  string
		real   bool
	}{
		{map[string]any{"phase": "Creating"}, "Creating", true},
		{map[string]any{"phase": "Running", "startTime": "2026-01-02T03:04:05Z", "sdkSessionId": "sdk-1",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}, "Running", true},
		// Same content again, different order of the same fields: no call.
		{map[string]any{"sdkSessionId": "sdk-1", "conditions": []any{map[string]any{"status": "True", "type": "Ready"}},
			"startTime": "2026-01-02T03:04:05Z", "phase": "Running"}, "Running", false},
		{map[string]any{"phase": "Completed", "startTime": "2026-01-02T03:04:05Z", "completionTime": "2026-01-02T04:00:00Z",
			"sdkSessionId": "sdk-1", "sdkRestartCount": int64(2), "reconciledRepos": []any{map[string]any{"url": "u"}},
			"reconciledWorkflow": map[string]any{"gitUrl": "w"}}, "Completed", true},
	}
	want := base
	for i, st := range steps {
		h.setCRStatus(t, name, crName, st.status)
		if st.real {
			want++
		}
		testenv.Eventually(t, wait, func() error {
			got, err := h.cl.GetSession(ctx, id)
			if err != nil {
				return err
			}
			if got.GetPhase() != st.phase {
				return fmt.Errorf("step %d: phase = %q, want %q", i, got.GetPhase(), st.phase)
			}
			if n := h.api.CallCount(updateStatusMethod); n != want {
				return fmt.Errorf("step %d: UpdateSessionStatus calls = %d, want %d", i, n, want)
			}
			return nil
		})
	}
	// A metadata-only change of the CR (someone labels it) is no status change.
	u, err := h.cr(t, name, crName)
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(u.Object, "x", "metadata", "labels", "someone"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).Update(ctx, u, metav1.UpdateOptions{FieldManager: "someone"}); err != nil {
		t.Fatal(err)
	}
	// Let every echo (session events of our writes) go through, then count.
	h.quiesce(t, r)
	got, err := h.cl.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// Every field the steps set must have reached the API, not only the phase.
	if got.GetSdkRestartCount() != 2 || got.GetCompletionTime().AsTime().Format("15:04") != "04:00" || got.GetReconciledWorkflow() != `{"gitUrl":"w"}` {
		t.Errorf("session status = restarts %d, completion %v, workflow %q", got.GetSdkRestartCount(), got.GetCompletionTime().AsTime(), got.GetReconciledWorkflow())
	}
	if got.GetStartTime() == nil || got.GetStartTime().AsTime().Format(time.RFC3339) != "2026-01-02T03:04:05Z" {
		t.Errorf("start time = %v, want 2026-01-02T03:04:05Z", got.GetStartTime())
	}
	if got.GetSdkSessionId() != "sdk-1" || got.GetReconciledRepos() != `[{"url":"u"}]` {
		t.Errorf("session status = sdk session %q, repos %q", got.GetSdkSessionId(), got.GetReconciledRepos())
	}
	if n := h.api.CallCount(updateStatusMethod); n != want {
		t.Errorf("UpdateSessionStatus calls = %d, want %d (one per real change)", n, want)
	}
}
