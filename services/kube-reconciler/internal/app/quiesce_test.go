package app

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestQuiesceWaitsForTheAPI holds the API's watch events back and checks
// that quiesce waits for them: a change the API has not sent yet is not in
// the stream, so counting the stream's events alone would call the system
// quiet before the change was handled (how TestNoApplyWhenUpToDate once
// failed CI).
func TestQuiesceWaitsForTheAPI(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "quiesce1", nil, nil)
	h.quiesce(t, r)
	before := r.stats.Snapshot().Acked

	const held = 500 * time.Millisecond
	h.api.SetSendDelay(held)
	name := unique("quiesce")
	h.project(t, name)
	h.quiesce(t, r)

	if got := r.stats.Snapshot().Acked; got <= before {
		t.Fatalf("quiesce returned before the project's event was handled (%d events acked before it, %d after)", before, got)
	}
	if _, err := h.kube.CoreV1().Namespaces().Get(t.Context(), name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the project's namespace after quiesce: %v", err)
	}
}
