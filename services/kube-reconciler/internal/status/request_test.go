package status

import (
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/types/known/timestamppb"
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
		got := r.pending(id, st.api, nil, st.cr)
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

// TestStartJudgedWithoutMemory: a replica that remembers nothing of a
// session (restarted, or its partition just moved here) sees API Pending and
// a terminal CR. It is a user's start only when the API already holds the
// end of the CR's run, which the write-back carried with the terminal phase
// the start's guard required; a Pending older than that end came from the
// CR and must not run the session again.
func TestStartJudgedWithoutMemory(t *testing.T) {
	t.Parallel()
	end := "2026-01-02T03:04:05Z"
	endTS := func(s string) *timestamppb.Timestamp {
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return timestamppb.New(ts)
	}
	ended := func(phase, completion string) *unstructured.Unstructured {
		return cr(map[string]any{"phase": phase, "completionTime": completion})
	}
	for _, tc := range []struct {
		name   string
		apiEnd *timestamppb.Timestamp
		cr     *unstructured.Unstructured
		want   *request
	}{
		{"API never saw an end", nil, ended("Failed", end), nil},
		{"API saw an older run's end", endTS("2026-01-01T00:00:00Z"), ended("Completed", end), nil},
		{"API saw this run's end: a user's start", endTS(end), ended("Failed", end), &startRequest},
		{"the same second, finer in the API", timestamppb.New(endTS(end).AsTime().Add(300 * time.Millisecond)), ended("Stopped", end), &startRequest},
		{"CR without a completion time: taken as a start", nil, crIn("Failed", nil), &startRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := newRequests(10)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.pending("S1", session.PhasePending, tc.apiEnd, tc.cr); got != tc.want {
				t.Fatalf("pending = %v, want %v", got, tc.want)
			}
			if tc.want == nil {
				// Remembered as agreed: the next look is no start either.
				if got := r.pending("S1", session.PhasePending, tc.apiEnd, tc.cr); got != nil {
					t.Fatalf("second look: pending = %v, want none", got)
				}
			}
		})
	}
}
