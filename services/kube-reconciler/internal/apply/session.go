package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// crDocument is the apply body of an AgenticSession: only the fields the
// reconciler sets (spec.AgenticSessionSpec omits every unset one, so no zero
// value is claimed). It never has a status, so the operator's status is
// untouched.
type crDocument struct {
	APIVersion string                  `json:"apiVersion"`
	Kind       string                  `json:"kind"`
	Metadata   crMetadata              `json:"metadata"`
	Spec       spec.AgenticSessionSpec `json:"spec"`
}

type crMetadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// SessionObject returns the unstructured apply body of as.
func SessionObject(as *spec.AgenticSession) (*unstructured.Unstructured, error) {
	doc := crDocument{
		APIVersion: AgenticSessionGVR.GroupVersion().String(),
		Kind:       spec.Kind,
		Metadata:   crMetadata{Name: as.Name, Namespace: as.Namespace, Labels: as.Labels, Annotations: as.Annotations},
		Spec:       as.Spec,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode agenticsession %s/%s: %w", as.Namespace, as.Name, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("decode agenticsession %s/%s: %w", as.Namespace, as.Name, err)
	}
	return u, nil
}

// Session prunes as to the installed CRD, applies it and returns the object as
// stored (with its UID). Fields the reconciler set before and no longer sets
// are removed from the object, as server-side apply does for a field manager's
// own fields. The applied object carries AnnotationAppliedHash, the hash of
// what was applied, so UpToDate can tell from a cached copy that nothing
// changed. Errors from the pruner (see package crd) and the API
// server are wrapped; apierrors.IsInvalid tells a spec the server refused.
func (a *Applier) Session(ctx context.Context, as *spec.AgenticSession) (*unstructured.Unstructured, error) {
	u, h, err := a.sessionBody(as)
	if err != nil {
		return nil, err
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[spec.AnnotationAppliedHash] = h
	u.SetAnnotations(ann)
	got, err := a.dyn.Resource(AgenticSessionGVR).Namespace(as.Namespace).Apply(ctx, as.Name, u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return nil, fmt.Errorf("apply agenticsession %s/%s: %w", as.Namespace, as.Name, err)
	}
	return got, nil
}

// UpToDate reports whether cur, a cached copy of the AgenticSession of as,
// already holds what Session would apply: the same applied hash (so no
// field set before and no longer set is left to remove) and every field of
// the apply body with the same value (so nobody changed one of ours since).
// Applying as again would then change nothing, and the call can be saved.
// Fields others own (status, the operator's) are not compared.
func (a *Applier) UpToDate(cur *unstructured.Unstructured, as *spec.AgenticSession) bool {
	if cur == nil {
		return false
	}
	body, h, err := a.sessionBody(as)
	if err != nil || cur.GetAnnotations()[spec.AnnotationAppliedHash] != h {
		return false
	}
	return holds(cur.Object, body.Object)
}

// holds reports whether have holds every field of want with the same
// value: maps may have more keys, lists must match element by element.
// Both come from the same JSON decoder (unstructured), so numbers compare
// as int64 or float64 alike.
func holds(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			hv, found := h[k]
			if !found || !holds(hv, wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for i := range w {
			if !holds(h[i], w[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(have, want)
	}
}

// sessionBody is the pruned apply body of as and its hash.
func (a *Applier) sessionBody(as *spec.AgenticSession) (*unstructured.Unstructured, string, error) {
	if a.pruner == nil {
		return nil, "", ErrNoPruner
	}
	u, err := SessionObject(as)
	if err != nil {
		return nil, "", err
	}
	if err := a.pruner.PruneSession(u); err != nil {
		return nil, "", fmt.Errorf("apply agenticsession %s/%s: %w", as.Namespace, as.Name, err)
	}
	// encoding/json sorts map keys, so the same body gives the same bytes.
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, "", fmt.Errorf("encode agenticsession %s/%s: %w", as.Namespace, as.Name, err)
	}
	sum := sha256.Sum256(b)
	return u, hex.EncodeToString(sum[:16]), nil
}

// DeleteSession deletes the AgenticSession namespace/name; already gone is fine.
func (a *Applier) DeleteSession(ctx context.Context, namespace, name string) error {
	err := a.dyn.Resource(AgenticSessionGVR).Namespace(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete agenticsession %s/%s: %w", namespace, name, err)
	}
	return nil
}
