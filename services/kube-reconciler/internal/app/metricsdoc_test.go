package app

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestMetricsAsDocumented: kube-reconciler is not in the dev stack that
// deploy/deploytest's TestMonitoringMetricsAreExported scrapes, so its
// /metrics is held to docs/operations.md#metrics here, on the real
// kube-apiserver: after a project, its settings (one group_access entry
// refused) and a session are reconciled, every exported series is of a
// metric the kube-reconciler section (or the consumer-group section)
// documents and carries exactly the labels its row lists.
func TestMetricsAsDocumented(t *testing.T) {
	doc, err := testenv.ReadMetricsDoc("../../../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	r := h.start(t, "md1", nil, nil)
	name := unique("md")
	pid := h.project(t, name).GetMetadata().GetId()
	if _, err := h.cl.CreateProjectSettings(t.Context(), &ambientv1.CreateProjectSettingsRequest{ProjectId: pid,
		GroupAccess: ptr(`[{"group":"evil","role":"cluster-admin"},{"group":"ok","role":"ambient-project-view"}]`)}); err != nil {
		t.Fatal(err)
	}
	h.createSessions(t, pid, 1)
	h.quiesce(t, r)
	body := get(t, "http://"+r.addr.String()+"/metrics")
	// The check means something only with series of each kind of label.
	for _, name := range []string{"ambient_kube_reconciler_reconciles_total", "ambient_kube_reconciler_reconcile_duration_seconds_bucket",
		"ambient_kube_reconciler_rejected_total", "ambient_kube_reconciler_status_cached_sessions", "consumer_group_delivered_total", "consumer_group_partition_backlog"} {
		if _, ok := testenv.MetricSum(body, name); !ok {
			t.Errorf("/metrics has no %s after the reconciles", name)
		}
	}
	series, err := testenv.ParseExposition(body)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := doc.SeriesProblems("kube-reconciler", series)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("/metrics disagrees with docs/operations.md#metrics: %s", p)
	}
}
