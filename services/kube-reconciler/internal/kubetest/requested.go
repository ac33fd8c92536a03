package kubetest

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
)

// Requested returns a check that an AgenticSession asks the session
// operator for desired (spec.AnnotationDesiredPhase) with an RFC 3339
// stamp in stampKey: a start or stop as kube-reconciler passes it on.
func Requested(desired, stampKey string) func(u *unstructured.Unstructured) error {
	return func(u *unstructured.Unstructured) error {
		a := u.GetAnnotations()
		if a[spec.AnnotationDesiredPhase] != desired {
			return fmt.Errorf("desired-phase %q, want %q", a[spec.AnnotationDesiredPhase], desired)
		}
		if _, err := time.Parse(time.RFC3339, a[stampKey]); err != nil {
			return fmt.Errorf("%s: %w", stampKey, err)
		}
		return nil
	}
}
