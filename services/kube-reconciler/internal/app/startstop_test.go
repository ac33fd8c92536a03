package app

import (
	"fmt"
	"testing"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// kubeSession is a session of a new project whose CR the operator put in
// phase, with that phase written back to the API.
type kubeSession struct{ id, ns, cr string }

func (h *harness) kubeSessionIn(t *testing.T, r *replica, phase string) kubeSession {
	t.Helper()
	ns := unique("ss")
	pid := h.project(t, ns).GetMetadata().GetId()
	s, err := h.cl.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "s", ProjectId: ptr(pid)})
	if err != nil {
		t.Fatal(err)
	}
	ks := kubeSession{id: s.GetMetadata().GetId(), ns: ns, cr: lower(s.GetKubeCrName())}
	h.waitCR(t, ks.ns, ks.cr, nil)
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": phase})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, phase) })
	h.quiesce(t, r)
	return ks
}

func (h *harness) waitSession(t *testing.T, id string, ok func(s *ambientv1.Session) error) {
	t.Helper()
	testenv.Eventually(t, wait, func() error {
		s, err := h.cl.GetSession(t.Context(), id)
		if err != nil {
			return err
		}
		return ok(s)
	})
}

func wantPhase(s *ambientv1.Session, phase string) error {
	if s.GetPhase() != phase {
		return fmt.Errorf("phase %q, want %q", s.GetPhase(), phase)
	}
	return nil
}

func (h *harness) rest(t *testing.T) *apiclient.RESTClient {
	t.Helper()
	rc, err := apiclient.NewREST(apiclient.RESTConfig{URL: h.api.RESTURL(), Token: testenv.APIToken})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// clearAnnotations removes keys from the CR as the session operator does
// once it acted (ambient-code/platform, components/operator, its
// clearAnnotation): one key at a time, a Get and an Update of the whole
// object without the key, by a field manager of its own. The operator
// gives up on a conflict and tries again on its next pass; the test
// retries at once.
func (h *harness) clearAnnotations(t *testing.T, ks kubeSession, keys ...string) {
	t.Helper()
	crs := h.dyn.Resource(apply.AgenticSessionGVR).Namespace(ks.ns)
	for _, k := range keys {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			u, err := crs.Get(t.Context(), ks.cr, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ann := u.GetAnnotations()
			if _, ok := ann[k]; !ok {
				return nil
			}
			delete(ann, k)
			u.SetAnnotations(ann)
			_, err = crs.Update(t.Context(), u, metav1.UpdateOptions{FieldManager: "operator"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// noRequest fails when the CR carries a start/stop request.
func (h *harness) noRequest(t *testing.T, ks kubeSession) {
	t.Helper()
	u, err := h.cr(t, ks.ns, ks.cr)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{spec.AnnotationDesiredPhase, spec.AnnotationStopRequestedAt, spec.AnnotationStartRequestedAt} {
		if v, ok := u.GetAnnotations()[k]; ok {
			t.Errorf("CR annotation %s=%q, want none", k, v)
		}
	}
}

// TestStopHeldUntilOperatorActs: a stop through the API (phase Stopping) of a
// Running CR is not undone by the write-back of the CR's Running; the CR gets
// the operator's stop annotations, and the operator's Stopping and Stopped
// reach the API. Once the operator cleared them, they are not put back.
func TestStopHeldUntilOperatorActs(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "stop1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Running")
	if _, err := h.rest(t).StopSession(t.Context(), ks.id); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, ks.ns, ks.cr, kubetest.Requested("Stopped", spec.AnnotationStopRequestedAt))
	h.quiesce(t, r)
	got, err := h.cl.GetSession(t.Context(), ks.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPhase() != "Stopping" {
		t.Fatalf("after stop: phase %q, want Stopping (the CR's Running written over it)", got.GetPhase())
	}

	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Stopping", "sdkSessionId": "sdk-stopping"})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error {
		if s.GetSdkSessionId() != "sdk-stopping" {
			return fmt.Errorf("sdk session id %q", s.GetSdkSessionId())
		}
		return wantPhase(s, "Stopping")
	})
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Stopped", "sdkSessionId": "sdk-stopping"})
	h.clearAnnotations(t, ks, spec.AnnotationDesiredPhase, spec.AnnotationStopRequestedAt)
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, "Stopped") })
	// A status change after the annotations were cleared: once the API has
	// it, the write-back has seen the CR without them.
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Stopped", "sdkSessionId": "sdk-stopped"})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error {
		if s.GetSdkSessionId() != "sdk-stopped" {
			return fmt.Errorf("sdk session id %q", s.GetSdkSessionId())
		}
		return nil
	})
	h.noRequest(t, ks)
}

// TestStartHeldUntilOperatorActs: a start through the API (phase Pending) of
// a Completed CR is not undone; the CR gets the start annotations, other
// status fields are still written meanwhile, and the request is not
// annotated again after the operator cleared the annotations. The
// operator's new run reaches the API, also when it fails straight from
// Pending (no second start).
func TestStartHeldUntilOperatorActs(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "start1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Completed")
	if _, err := h.rest(t).StartSession(t.Context(), ks.id); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, ks.ns, ks.cr, kubetest.Requested("Running", spec.AnnotationStartRequestedAt))
	h.quiesce(t, r)
	got, err := h.cl.GetSession(t.Context(), ks.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPhase() != "Pending" {
		t.Fatalf("after start: phase %q, want Pending (the CR's Completed written over it)", got.GetPhase())
	}

	// The operator takes the annotations first; its status moves later.
	h.clearAnnotations(t, ks, spec.AnnotationDesiredPhase, spec.AnnotationStartRequestedAt)
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Completed", "sdkSessionId": "sdk-old"})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error {
		if s.GetSdkSessionId() != "sdk-old" {
			return fmt.Errorf("sdk session id %q", s.GetSdkSessionId())
		}
		return wantPhase(s, "Pending")
	})
	h.noRequest(t, ks)

	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Pending", "startTime": "2026-01-02T03:04:05Z"})
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Failed", "startTime": "2026-01-02T03:04:05Z"})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, "Failed") })
	h.noRequest(t, ks)
}

// TestNoRequestNoAnnotation: a session nobody started or stopped, whose CR
// went Pending (written to the API) and then Failed, gets Failed in the API
// and no annotation: an API Pending that came from the CR is no start.
func TestNoRequestNoAnnotation(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "noreq1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Pending")
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Failed"})
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, "Failed") })
	h.quiesce(t, r)
	h.noRequest(t, ks)
	u, err := h.cr(t, ks.ns, ks.cr)
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range u.GetManagedFields() {
		if mf.Manager == apply.FieldManager && mf.Operation == metav1.ManagedFieldsOperationUpdate {
			t.Errorf("the reconciler patched the CR (managed fields %s)", mf.FieldsV1)
		}
	}
}

// TestStopWithdrawsPendingStart: a session started (API Pending, the CR
// told to run) and stopped before the operator acted must not run: the
// start annotation is replaced by a stop, and the API gets the CR's
// terminal phase back.
func TestStopWithdrawsPendingStart(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "withdraw1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Completed")
	rc := h.rest(t)
	if _, err := rc.StartSession(t.Context(), ks.id); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, ks.ns, ks.cr, kubetest.Requested("Running", spec.AnnotationStartRequestedAt))
	if _, err := rc.StopSession(t.Context(), ks.id); err != nil {
		t.Fatal(err)
	}
	h.waitCR(t, ks.ns, ks.cr, kubetest.Requested("Stopped", spec.AnnotationStopRequestedAt))
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, "Completed") })
}

// TestStalePendingAfterRestartIsNoStart: a session whose CR went Pending
// (written to the API) and then Failed while no replica ran gets Failed in
// the API from the replica that starts next, which remembers nothing of it,
// and no start annotation: the API's Pending is older than the run's end,
// so it is the CR's, not a user's. Taken for a start, the operator would
// run a finished session again.
func TestStalePendingAfterRestartIsNoStart(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, "stale1", nil, nil)
	ks := h.kubeSessionIn(t, r, "Pending")
	r.stop()
	h.setCRStatus(t, ks.ns, ks.cr, map[string]any{"phase": "Failed", "completionTime": "2026-01-02T03:04:05Z"})
	r2 := h.start(t, "stale2", nil, nil)
	h.waitSession(t, ks.id, func(s *ambientv1.Session) error { return wantPhase(s, "Failed") })
	h.quiesce(t, r, r2)
	h.noRequest(t, ks)

	// A user's start of the session now (the API shows the run's end) is
	// one, by a replica that again remembers nothing.
	r2.stop()
	if _, err := h.rest(t).StartSession(t.Context(), ks.id); err != nil {
		t.Fatal(err)
	}
	h.start(t, "stale3", nil, nil)
	h.waitCR(t, ks.ns, ks.cr, kubetest.Requested("Running", spec.AnnotationStartRequestedAt))
}
