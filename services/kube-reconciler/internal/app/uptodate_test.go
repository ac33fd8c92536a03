package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// TestNoApplyWhenUpToDate (issue 15): an event that changes nothing of the
// AgenticSession (the echo of the status write-back's own kube_cr_uid
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
	cr := lower(s.GetMetadata().GetId())
	h.waitCR(t, name, cr, nil)
	testenv.Eventually(t, wait, func() error {
		got, err := h.cl.GetSession(ctx, s.GetMetadata().GetId())
		if err != nil {
			return err
		}
		if got.GetKubeCrUid() == "" {
			return fmt.Errorf("kube_cr_uid not written back yet")
		}
		return nil
	})
	h.quiesce(t, r)
	if n, _ := testenv.MetricSum(get(t, "http://"+r.addr.String()+"/metrics"), "ambient_kube_reconciler_reconciles_total", `resource="sessions"`, `result="unchanged"`); n < 1 {
		t.Errorf("the status write-back's echo was applied again (%v unchanged reconciles)", n)
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
