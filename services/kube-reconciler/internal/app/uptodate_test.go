package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// TestNoApplyWhenUpToDate (issue 15): an event that changes nothing of the
// AgenticSession (like the echo of the status write-back's own kube_cr_uid
// write) is handled without a Kubernetes call, because the cached CR
// already holds what would be applied. An edit of one of the reconciler's
// fields by someone else is not mistaken for that: the next pass of the
// resync applies again and restores it.
func TestNoApplyWhenUpToDate(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "uptodate1", nil, map[string]string{config.EnvResyncInterval: "2s"})
	ctx := t.Context()
	name := unique("uptodate")
	h.project(t, name)
	s, err := h.cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(name), Prompt: ptr("mine")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	cr := lower(id)
	h.waitCR(t, name, cr, nil)
	testenv.Eventually(t, wait, func() error {
		got, err := h.cl.GetSession(ctx, id)
		if err != nil {
			return err
		}
		if got.GetKubeCrUid() == "" {
			return fmt.Errorf("kube_cr_uid not written back yet")
		}
		return nil
	})
	h.quiesce(t, r)

	// The echo of the write-back may have been coalesced with the create
	// (it can queue behind the create's handler), so it cannot be counted
	// on to get a call of its own. A status-only write of the test's own
	// makes an event that certainly does, after the CR is cached.
	metricsURL := "http://" + r.addr.String() + "/metrics"
	sessions := func(result string) float64 {
		labels := []string{`resource="sessions"`}
		if result != "" {
			labels = append(labels, `result="`+result+`"`)
		}
		n, _ := testenv.MetricSum(get(t, metricsURL), "ambient_kube_reconciler_reconciles_total", labels...)
		return n
	}
	handled, unchanged := sessions(""), sessions(metrics.ResultUnchanged)
	if _, err := h.cl.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, SdkRestartCount: ptr(int32(1))}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, wait, func() error {
		if n := sessions(""); n <= handled {
			return fmt.Errorf("the status-only write not handled yet (%v session events handled)", n)
		}
		return nil
	})
	if n := sessions(metrics.ResultUnchanged); n <= unchanged {
		t.Errorf("a status-only write was applied again (%v unchanged reconciles before it, %v after)", unchanged, n)
	}

	// Someone else changes a field the reconciler owns.
	patch := []byte(`{"spec":{"initialPrompt":"theirs"}}`)
	if _, err := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(name).Patch(ctx, cr, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "someone"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second+10*time.Second, func() error {
		u, err := h.cr(t, name, cr)
		if err != nil {
			return err
		}
		if got, _, _ := unstructured.NestedString(u.Object, "spec", "initialPrompt"); got != "mine" {
			return fmt.Errorf("initialPrompt %q, want it restored", got)
		}
		return nil
	})
}
