package status

import (
	"testing"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func crIn(phase string, annotations map[string]string) *unstructured.Unstructured {
	u := cr(map[string]any{"phase": phase})
	for k, v := range annotations {
		a := u.GetAnnotations()
		a[k] = v
		u.SetAnnotations(a)
	}
	return u
}

// TestRequestPending walks one session through the protocol: what is held
// and told, and when the write-back resumes.
func TestRequestPending(t *testing.T) {
	t.Parallel()
	r, err := newRequests(10)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		api      session.Phase
		cr       *unstructured.Unstructured
		wantReq  *request
		wantTell bool
		told     bool // the step annotates
	}{
		{"created, CR pending: no request", session.PhasePending, crIn("Pending", nil), nil, false, false},
		{"CR failed from pending: no start", session.PhasePending, crIn("Failed", nil), nil, false, false},
		{"written back", session.PhaseFailed, crIn("Failed", nil), nil, false, false},
		{"user start", session.PhasePending, crIn("Failed", nil), &startRequest, true, true},
		{"told: not again", session.PhasePending, crIn("Failed", nil), &startRequest, false, false},
		{"annotations cleared, CR unmoved: still held, not told again", session.PhasePending, crIn("Failed", nil), &startRequest, false, false},
		{"operator moved the CR", session.PhasePending, crIn("Pending", nil), nil, false, false},
		{"CR running", session.PhaseRunning, crIn("Running", nil), nil, false, false},
		{"user stop", session.PhaseStopping, crIn("Running", nil), &stopRequest, true, true},
		{"CR stopping", session.PhaseStopping, crIn("Stopping", nil), nil, false, false},
		{"CR stopped", session.PhaseStopping, crIn("Stopped", nil), nil, false, false},
		{"another session: stop already annotated by someone", session.PhaseStopping,
			crIn("Creating", map[string]string{spec.AnnotationDesiredPhase: "Stopped"}), &stopRequest, false, false},
	}
	for _, st := range steps {
		id := "S1"
		if st.cr.GetAnnotations()[spec.AnnotationDesiredPhase] != "" {
			id = "S2"
		}
		got := r.pending(id, st.api, st.cr)
		if got != st.wantReq {
			t.Fatalf("%s: pending = %v, want %v", st.name, got, st.wantReq)
		}
		if got == nil {
			continue
		}
		if tell := r.mustTell(id, got, st.cr); tell != st.wantTell {
			t.Fatalf("%s: mustTell = %v, want %v", st.name, tell, st.wantTell)
		}
		if st.told {
			r.markTold(id, got, st.cr)
		}
	}
}
