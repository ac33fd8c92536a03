package app

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDeadLetteredSessionReported: a session whose AgenticSession cannot
// be made on any try (it has no project, and the control plane's NAMESPACE
// does not exist) is dead-lettered and the session says why:
// Reconciled=False, reason ReconcileFailed, with Kubernetes' error; its
// phase is left alone. Once the namespace exists, the resync makes the CR
// and the condition turns Reconciled=True.
func TestDeadLetteredSessionReported(t *testing.T) {
	h := newHarness(t)
	ns := unique("deadletter")
	r := h.start(t, "dl1", nil, map[string]string{
		config.EnvNamespace: ns, group.EnvMaxDeliver: "2", config.EnvResyncInterval: "2s",
	})
	s, err := h.cl.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "s", Prompt: ptr("p")})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	reconciled := func(s *ambientv1.Session) (session.Condition, error) {
		conds, err := session.ParseConditions(s.GetConditions())
		if err != nil {
			return session.Condition{}, err
		}
		c, ok := conds.Get(reconcile.ConditionReconciled)
		if !ok {
			return c, fmt.Errorf("no %s condition in %s", reconcile.ConditionReconciled, s.GetConditions())
		}
		return c, nil
	}
	h.waitSession(t, id, func(s *ambientv1.Session) error {
		c, err := reconciled(s)
		if err != nil {
			return err
		}
		if c.Status != session.StatusFalse || c.Reason != reconcile.ReasonReconcileFailed || !strings.Contains(c.Message, "not found") {
			return fmt.Errorf("condition %+v, want False %s naming the missing namespace", c, reconcile.ReasonReconcileFailed)
		}
		if s.GetPhase() != "" {
			return fmt.Errorf("phase %q, want it left alone", s.GetPhase())
		}
		return nil
	})
	if n := r.stats.Snapshot().DeadLettered; n == 0 {
		t.Fatalf("the session was reported with no dead letter (%d)", n)
	}

	if _, err := h.kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, ns, lower(s.GetKubeCrName()), nil)
	h.waitSession(t, id, func(s *ambientv1.Session) error {
		c, err := reconciled(s)
		if err != nil {
			return err
		}
		if c.Status != session.StatusTrue || c.Reason != reconcile.ReasonApplied {
			return fmt.Errorf("condition %+v after the namespace appeared, want True %s", c, reconcile.ReasonApplied)
		}
		return nil
	})
}
