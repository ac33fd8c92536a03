package reconcile

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// TestForbiddenApplyReportedAtOnceAndResynced: a session whose namespace's
// ResourceQuota allows no AgenticSession is refused with 403 Forbidden. The
// event is acked on its first try with the refusal reported on the session
// (phase Failed, Reconciled=False Forbidden naming the quota): retried, it
// held one of the member's in-flight slots through every backoff, stalling
// other tenants' sessions for minutes. Nothing is lost: once the quota is
// raised, a resync pass creates the CR and clears the report.
func TestForbiddenApplyReportedAtOnceAndResynced(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, dyn := newReconciler(t, store)
	cl := testenv.APIClient(t, testenv.API(t))
	r.cfg.API, r.cfg.Source = cl, cl
	ctx := t.Context()
	project := fmt.Sprintf("quota-%d", time.Now().UnixNano()%1e9)
	s, err := cl.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: "s", Prompt: proto.String("p"), ProjectId: proto.String(project)})
	if err != nil {
		t.Fatal(err)
	}
	id := s.GetMetadata().GetId()
	name, err := spec.CRName(s)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := r.projectNamespace(project)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ensureNamespace(ctx, ns, project); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(kube.Env(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	setSessionQuota(t, cs, dyn, ns, 0)

	put(t, store, s)
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()), Attempt: 1}); err != nil {
		t.Fatalf("Handle of a session over its namespace's quota = %v; want nil (acked, reported on the session)", err)
	}
	crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(ns)
	if _, err := crs.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("CR of the session over quota: %v; want NotFound", err)
	}
	reported, err := cl.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	c := reconciledCondition(t, reported)
	if session.PhaseOf(reported) != session.PhaseFailed || c.Status != session.StatusFalse || c.Reason != ReasonForbidden ||
		!strings.Contains(c.Message, "exceeded quota") {
		t.Fatalf("session over quota: phase %q, conditions %s; want Failed with Reconciled=False %s naming the quota",
			session.PhaseOf(reported), reported.GetConditions(), ReasonForbidden)
	}

	// The quota raised; the informer caches the session as reported.
	setSessionQuota(t, cs, dyn, ns, 1)
	put(t, store, reported)
	if got, err := r.ResyncObject(ctx, eventsv1.Resource_RESOURCE_SESSIONS, id); err != nil || got != metrics.ResultOK {
		t.Fatalf("ResyncObject after the quota was raised = %q, %v; want %q", got, err, metrics.ResultOK)
	}
	if _, err := crs.Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("CR after the quota was raised and a resync pass: %v", err)
	}
	cleared, err := cl.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c := reconciledCondition(t, cleared); session.PhaseOf(cleared) != session.PhasePending || c.Status != session.StatusTrue || c.Reason != ReasonApplied {
		t.Fatalf("session applied after the quota was raised: phase %q, conditions %s; want Pending with Reconciled=True %s",
			session.PhaseOf(cleared), cleared.GetConditions(), ReasonApplied)
	}
}

// TestForbiddenApplyOfSessionWithCRNotReported: a session that has a CR
// (here in the project it moved from) and whose new apply is forbidden is
// acked too, but not reported on: its status is the operator's, which the
// write-back would put over the report (noStatus fails the test on any
// write). The CR it has is left alone.
func TestForbiddenApplyOfSessionWithCRNotReported(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, dyn, _ := newLiveReconciler(t, store)
	ctx := t.Context()
	from := fmt.Sprintf("quota-a-%d", time.Now().UnixNano()%1e9)
	to := fmt.Sprintf("quota-b-%d", time.Now().UnixNano()%1e9)
	t0 := time.Now()
	s := sessionAt(from+"-s", "go", t0)
	s.ProjectId = proto.String(from)
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.ensureNamespace(ctx, to, to); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(kube.Env(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	setSessionQuota(t, cs, dyn, to, 0)
	moved := proto.CloneOf(s)
	moved.ProjectId = proto.String(to)
	moved.Metadata.UpdatedAt = timestamppb.New(t0.Add(time.Second))
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, moved, s, time.Now()), Attempt: 1}); err != nil {
		t.Fatalf("Handle of a session with a CR moved over quota = %v; want nil (acked)", err)
	}
	name := s.GetMetadata().GetId()
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(from).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("CR the session had in %s: %v; want it kept", from, err)
	}
}

func reconciledCondition(t *testing.T, s *ambientv1.Session) session.Condition {
	t.Helper()
	conds, err := session.ParseConditions(s.GetConditions())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := conds.Get(ConditionReconciled)
	return c
}

// setSessionQuota makes the ResourceQuota of namespace ns allow n
// AgenticSessions, and waits until admission enforces it. envtest runs no
// quota controller, so the test writes the status (hard and used) the
// admission plugin reads, as the controller would; the plugin reads quotas
// from an informer, so a dry-run create is probed until it says what the
// quota says.
func setSessionQuota(t *testing.T, cs kubernetes.Interface, dyn dynamic.Interface, ns string, n int64) {
	t.Helper()
	ctx := t.Context()
	name := corev1.ResourceName("count/" + spec.Resource + "." + spec.Group)
	hard := corev1.ResourceList{name: *resource.NewQuantity(n, resource.DecimalSI)}
	quotas := cs.CoreV1().ResourceQuotas(ns)
	q, err := quotas.Get(ctx, "sessions", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		q, err = quotas.Create(ctx, &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "sessions"},
			Spec: corev1.ResourceQuotaSpec{Hard: hard}}, metav1.CreateOptions{})
	case err == nil:
		q.Spec.Hard = hard
		q, err = quotas.Update(ctx, q, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	q.Status = corev1.ResourceQuotaStatus{Hard: hard, Used: corev1.ResourceList{name: *resource.NewQuantity(0, resource.DecimalSI)}}
	if _, err := quotas.UpdateStatus(ctx, q, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": spec.Group + "/" + spec.Version, "kind": spec.Kind,
		"metadata": map[string]any{"name": "quota-probe"}, "spec": map[string]any{},
	}}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if forbidden := apierrors.IsForbidden(err); forbidden != (n == 0) || (!forbidden && err != nil) {
			return fmt.Errorf("dry-run create under a quota of %d AgenticSessions: %w", n, err)
		}
		return nil
	})
}
