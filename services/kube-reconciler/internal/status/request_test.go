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
	r, err := newRequests(10, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
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
		if tell := r.mustTell(id, got, st.cr, now); tell.tell != st.wantTell {
			t.Fatalf("%s: mustTell = %+v, want tell %v", st.name, tell, st.wantTell)
		}
		if st.told {
			r.markTold(id, got, st.cr, now)
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
			r, err := newRequests(10, DefaultRequestGrace)
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

// TestRequestToldAgainAfterGrace: a told request whose annotation is gone
// while the CR has not moved is told again once it has been gone for the
// grace, counted from the first look that found it gone (the operator may
// clear first and act a moment later); until then mustTell asks for a look
// at the end of the grace. Found annotated again, the wait starts over.
func TestRequestToldAgainAfterGrace(t *testing.T) {
	t.Parallel()
	const grace = 30 * time.Second
	r, err := newRequests(10, grace)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	running := crIn("Running", nil)
	annotated := crIn("Running", map[string]string{spec.AnnotationDesiredPhase: "Stopped"})
	look := func(name string, d time.Duration, cr *unstructured.Unstructured, want telling) {
		t.Helper()
		req := r.pending("S1", session.PhaseStopping, nil, cr)
		if req != &stopRequest {
			t.Fatalf("%s: pending = %v, want the stop", name, req)
		}
		if got := r.mustTell("S1", req, cr, at(d)); got != want {
			t.Fatalf("%s: mustTell = %+v, want %+v", name, got, want)
		}
	}
	look("user stop", 0, running, telling{tell: true})
	r.markTold("S1", &stopRequest, running, at(0))
	look("the informer's copy from before the patch", time.Second, running, telling{recheck: grace})
	look("the patch seen", 2*time.Second, annotated, telling{})
	look("annotation gone", 40*time.Second, running, telling{recheck: grace})
	look("still gone, within the grace", 69*time.Second, running, telling{recheck: time.Second})
	look("gone for the grace: told again", 70*time.Second, running, telling{tell: true, again: true, firstTold: at(0)})
	r.markTold("S1", &stopRequest, running, at(70*time.Second))
	look("the second tell waits its own grace", 71*time.Second, running, telling{recheck: grace})
	look("seen annotated again", 72*time.Second, annotated, telling{})
	look("gone again: the wait starts over", 200*time.Second, running, telling{recheck: grace})
	look("told a third time, still counted from the first", 230*time.Second, running, telling{tell: true, again: true, firstTold: at(0)})

	// The operator acted: the CR moved, nothing is pending and nothing
	// more is told, annotation or not.
	if req := r.pending("S1", session.PhaseStopping, nil, crIn("Stopping", nil)); req != nil {
		t.Fatalf("CR stopping: pending = %v, want none", req)
	}
}
