package status

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubetest"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// hang guards the waits of these tests: generous, only so that a lost
// request fails the test instead of hanging it.
const hang = 60 * time.Second

// Messages of the two tells (controller.go).
const (
	toldMsg      = "session start/stop passed to the operator"
	toldAgainMsg = "session start/stop passed to the operator again: its annotation is gone and the agenticsession has not moved"
)

// requestRig is one kube session on the real kube-apiserver and the
// in-memory ambient API, its AgenticSession written as the event path
// applies it, and a status write-back with the given request grace. The
// test plays the event path (Observe, as reconcile does after each
// session event) and the operator (the CR's status and annotations).
type requestRig struct {
	id     string
	key    types.NamespacedName
	crs    dynamic.ResourceInterface
	cl     *apiclient.Client
	rest   *apiclient.RESTClient
	ctl    *Controller
	logs   *kubetest.Logs
	status map[string]any // the CR's status, as the operator last wrote it
}

func newRequestRig(t *testing.T, grace time.Duration, status map[string]any) *requestRig {
	t.Helper()
	env := kube.Env(t)
	ctx := t.Context()
	suffix := time.Now().UnixNano() % 1e9
	ns, instance := fmt.Sprintf("retell-%d", suffix), fmt.Sprintf("retell-%d", suffix)

	api := testenv.API(t)
	cl := testenv.APIClient(t, api)
	rest, err := apiclient.NewREST(apiclient.RESTConfig{URL: api.RESTURL(), Token: testenv.APIToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: ns}); err != nil {
		t.Fatal(err)
	}
	s, err := cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", ProjectId: &ns})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	r := &requestRig{id: s.GetMetadata().GetId(), key: types.NamespacedName{Namespace: ns, Name: strings.ToLower(s.GetKubeCrName())},
		crs: dyn.Resource(apply.AgenticSessionGVR).Namespace(ns), cl: cl, rest: rest}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apply.AgenticSessionGVR.GroupVersion().String(),
		"kind":       "AgenticSession",
		"metadata": map[string]any{
			"name":        r.key.Name,
			"labels":      map[string]any{spec.LabelManagedBy: spec.ManagedByValue, spec.LabelInstance: instance, spec.LabelProjectID: ns},
			"annotations": map[string]any{spec.AnnotationSessionID: r.id},
		},
		"spec": map[string]any{"initialPrompt": "p", "displayName": "s"},
	}}
	if _, err := r.crs.Apply(ctx, r.key.Name, u, metav1.ApplyOptions{FieldManager: apply.FieldManager, Force: true}); err != nil {
		t.Fatal(err)
	}
	r.setStatus(t, status)

	_, js := testenv.JetStream(t, testenv.NATS(t))
	objects, err := bus.EnsureKV(ctx, js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	logs, log := kubetest.NewLogs()
	r.logs = logs
	r.ctl, err = New(Config{Dynamic: dyn, API: cl, Objects: objects, Metrics: m, Log: log, Owner: spec.Owner{Instance: instance},
		DefaultNamespace: "ambient-code", RequestGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r.ctl)
	// The operator's phase reaches the API: the session is in it, as a
	// user sees it before starting or stopping it.
	r.observe(t, s)
	r.waitSession(t, func(s *ambientv1.Session) error {
		if s.GetPhase() != status["phase"] {
			return fmt.Errorf("phase %q, want %q", s.GetPhase(), status["phase"])
		}
		return nil
	})
	return r
}

// observe hands s to the write-back as the event path does.
func (r *requestRig) observe(t *testing.T, s *ambientv1.Session) {
	t.Helper()
	r.ctl.Observe(s, r.key)
}

// setStatus writes the CR's status as the operator does (a conflict with
// an annotation patch is retried).
func (r *requestRig) setStatus(t *testing.T, st map[string]any) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := r.crs.Get(t.Context(), r.key.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		u.Object["status"] = st
		_, err = r.crs.UpdateStatus(t.Context(), u, metav1.UpdateOptions{FieldManager: "operator"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.status = st
}

func (r *requestRig) cr(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	u, err := r.crs.Get(t.Context(), r.key.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (r *requestRig) waitCR(t *testing.T, check func(u *unstructured.Unstructured) error) {
	t.Helper()
	testenv.Eventually(t, hang, func() error {
		u, err := r.crs.Get(t.Context(), r.key.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return check(u)
	})
}

func (r *requestRig) waitSession(t *testing.T, ok func(s *ambientv1.Session) error) {
	t.Helper()
	testenv.Eventually(t, hang, func() error {
		s, err := r.cl.GetSession(t.Context(), r.id)
		if err != nil {
			return err
		}
		return ok(s)
	})
}

// staleWrite writes old (the CR as read before the request was annotated)
// back whole, as the session operator does when it provisions a runner's
// token (ambient-code/platform components/operator, regenerateRunnerToken:
// updateAnnotations sets the annotations of the copy the reconcile read at
// its start on a fresh Get and Updates it). The request's annotations go
// without the operator acting on them; status is not touched (the status
// subresource ignores it), so the CR does not move. A conflict is retried
// on the current resourceVersion with old's annotations still.
func (r *requestRig) staleWrite(t *testing.T, old *unstructured.Unstructured) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := r.crs.Get(t.Context(), r.key.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		w := old.DeepCopy()
		w.SetResourceVersion(cur.GetResourceVersion())
		_, err = r.crs.Update(t.Context(), w, metav1.UpdateOptions{FieldManager: "operator"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	u := r.cr(t)
	if v, ok := u.GetAnnotations()[spec.AnnotationDesiredPhase]; ok {
		t.Fatalf("after the stale write: desired-phase %q, want none", v)
	}
	if got := runKey(u); got != runKey(old) {
		t.Fatalf("the stale write moved the CR: %s, was %s", got, runKey(old))
	}
}

// A stop and a start, each of a CR in the phase it applies to.
var requestCases = []struct {
	name     string
	status   map[string]any
	act      func(t *testing.T, r *requestRig) (*ambientv1.Session, error)
	desired  string
	stampKey string
}{
	{
		name:   "stop",
		status: map[string]any{"phase": "Running", "startTime": "2026-01-02T03:04:05Z"},
		act: func(t *testing.T, r *requestRig) (*ambientv1.Session, error) {
			return r.rest.StopSession(t.Context(), r.id)
		},
		desired: "Stopped", stampKey: spec.AnnotationStopRequestedAt,
	},
	{
		name:   "start",
		status: map[string]any{"phase": "Completed", "startTime": "2026-01-02T03:04:05Z", "completionTime": "2026-01-02T04:05:06Z"},
		act: func(t *testing.T, r *requestRig) (*ambientv1.Session, error) {
			return r.rest.StartSession(t.Context(), r.id)
		},
		desired: "Running", stampKey: spec.AnnotationStartRequestedAt,
	},
}

// makeRequest makes the case's request through the API's REST and waits for
// the CR to carry it; it returns the CR as read before (no request on it).
func makeRequest(t *testing.T, r *requestRig, act func(t *testing.T, r *requestRig) (*ambientv1.Session, error), desired, stampKey string) *unstructured.Unstructured {
	t.Helper()
	before := r.cr(t)
	s, err := act(t, r)
	if err != nil {
		t.Fatal(err)
	}
	r.observe(t, s)
	r.waitCR(t, kubetest.Requested(desired, stampKey))
	return before
}

// TestLostRequestToldAgain: a start or stop whose annotations the operator
// wrote away unseen (a whole-object write of a copy read before them) is
// told again once the grace has passed with the CR unmoved. Told once and
// never again, the CR never moved and the session stayed Stopping (or
// Pending) until the replica restarted.
func TestLostRequestToldAgain(t *testing.T) {
	for _, tc := range requestCases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRequestRig(t, 200*time.Millisecond, tc.status)
			before := makeRequest(t, r, tc.act, tc.desired, tc.stampKey)
			r.staleWrite(t, before)
			r.waitCR(t, kubetest.Requested(tc.desired, tc.stampKey))
			testenv.Eventually(t, hang, func() error {
				if n := len(r.logs.Lines(t, toldAgainMsg, map[string]string{logkey.SessionID: r.id, logkey.Phase: tc.desired})); n != 1 {
					return fmt.Errorf("%d logs of the second tell, want 1", n)
				}
				return nil
			})
			if got := runKey(r.cr(t)); got != runKey(before) {
				t.Fatalf("the CR moved: %s, was %s", got, runKey(before))
			}
		})
	}
}

// TestClearedRequestNotToldAgainWithinGrace: within the grace, a request
// whose annotations are gone (the operator may clear them first and act a
// moment later) is not put back, also when the CR's status changes: the
// sync that carried the change to the API left the CR without them.
func TestClearedRequestNotToldAgainWithinGrace(t *testing.T) {
	for _, tc := range requestCases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRequestRig(t, time.Hour, tc.status)
			before := makeRequest(t, r, tc.act, tc.desired, tc.stampKey)
			r.staleWrite(t, before)
			// A status change that does not move the CR (phase and times
			// kept): once the API has it, the write-back has synced the CR
			// without the annotations, and told (or not) before writing.
			st := map[string]any{"sdkSessionId": "sdk-after-clear"}
			for k, v := range r.status {
				st[k] = v
			}
			r.setStatus(t, st)
			r.waitSession(t, func(s *ambientv1.Session) error {
				if s.GetSdkSessionId() != "sdk-after-clear" {
					return fmt.Errorf("sdk session id %q", s.GetSdkSessionId())
				}
				return nil
			})
			if v, ok := r.cr(t).GetAnnotations()[spec.AnnotationDesiredPhase]; ok {
				t.Fatalf("desired-phase %q put back within the grace", v)
			}
			if n := len(r.logs.Lines(t, toldMsg, map[string]string{logkey.SessionID: r.id})); n != 1 {
				t.Errorf("%d logs of a tell, want 1", n)
			}
			if n := len(r.logs.Lines(t, toldAgainMsg, map[string]string{logkey.SessionID: r.id})); n != 0 {
				t.Errorf("%d logs of a second tell, want none", n)
			}
		})
	}
}

// TestLostStopOfARunGoingOn: a stop of a Pending CR whose annotations the
// operator wrote away unseen, while it went on with the run (Pending to
// Creating), is not taken as acted on: the API keeps Stopping, not the
// CR's Creating (the user's stop undone), and the stop is told again.
// A stop acted on leaves the CR Stopping or terminal, never Creating.
func TestLostStopOfARunGoingOn(t *testing.T) {
	stop := requestCases[0]
	r := newRequestRig(t, 200*time.Millisecond, map[string]any{"phase": "Pending"})
	before := makeRequest(t, r, stop.act, stop.desired, stop.stampKey)
	r.staleWrite(t, before)
	r.setStatus(t, map[string]any{"phase": "Creating", "startTime": "2026-01-02T03:04:05Z"})
	r.waitCR(t, kubetest.Requested(stop.desired, stop.stampKey))
	testenv.Eventually(t, hang, func() error {
		if n := len(r.logs.Lines(t, toldAgainMsg, map[string]string{logkey.SessionID: r.id, logkey.Phase: stop.desired})); n != 1 {
			return fmt.Errorf("%d logs of the second tell, want 1", n)
		}
		return nil
	})
	s, err := r.cl.GetSession(t.Context(), r.id)
	if err != nil {
		t.Fatal(err)
	}
	if s.GetPhase() != "Stopping" {
		t.Fatalf("API phase %q after the CR went on to Creating, want Stopping (the stop kept)", s.GetPhase())
	}
	// The operator acts on the stop told again: the CR's phase is the
	// API's once more.
	r.setStatus(t, map[string]any{"phase": "Stopped", "startTime": "2026-01-02T03:04:05Z", "completionTime": "2026-01-02T03:05:00Z"})
	r.waitSession(t, func(s *ambientv1.Session) error {
		if s.GetPhase() != "Stopped" {
			return fmt.Errorf("phase %q, want Stopped", s.GetPhase())
		}
		return nil
	})
}
