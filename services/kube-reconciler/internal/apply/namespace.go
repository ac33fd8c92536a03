package apply

import (
	"context"
	"fmt"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

// Namespace applies ns. Only its labels are owned: labels changed by hand are
// re-asserted, and everything else (other labels, annotations, finalizers) is
// left alone. Force takes the managed labels back from any other manager.
func (a *Applier) Namespace(ctx context.Context, ns spec.Namespace) error {
	cfg := corev1ac.Namespace(ns.Name).WithLabels(ns.Labels)
	if _, err := a.kube.CoreV1().Namespaces().Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("apply namespace %s: %w", ns.Name, err)
	}
	return nil
}
