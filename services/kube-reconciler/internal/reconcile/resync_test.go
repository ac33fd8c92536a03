package reconcile

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestResyncLeavesFreshWorkToTheEventPath: the informer writes KV just after
// it publishes, so right after a DELETED was handled KV may still hold the
// session. A resync of it within HandledFor leaves it alone
// (ResultRecent); without that guard the same resync would bring the CR of
// the deleted session back.
func TestResyncLeavesFreshWorkToTheEventPath(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, dyn := newReconciler(t, store)
	r.cfg.HandledFor = time.Hour
	ctx := t.Context()
	project := fmt.Sprintf("fresh-%d", time.Now().UnixNano()%1e9)
	s := sessionAt(project+"-s", "go", time.Now())
	s.ProjectId = proto.String(project)
	put(t, store, s)
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(project)
	if _, err := crs.Get(ctx, s.GetMetadata().GetId(), metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// DELETED handled; KV not yet updated by the informer.
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, s, s, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := r.ResyncObject(ctx, eventsv1.Resource_RESOURCE_SESSIONS, s.GetMetadata().GetId())
	if err != nil || got != metrics.ResultRecent {
		t.Fatalf("ResyncObject = %q, %v; want %q", got, err, metrics.ResultRecent)
	}
	if _, err := crs.Get(ctx, s.GetMetadata().GetId(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("resync brought the deleted session's CR back: %v", err)
	}

	r.cfg.HandledFor = 0 // the guard off: the hazard it prevents
	if got, err := r.ResyncObject(ctx, eventsv1.Resource_RESOURCE_SESSIONS, s.GetMetadata().GetId()); err != nil || got != metrics.ResultOK {
		t.Fatalf("ResyncObject without the guard = %q, %v; want %q", got, err, metrics.ResultOK)
	}
	if _, err := crs.Get(ctx, s.GetMetadata().GetId(), metav1.GetOptions{}); err != nil {
		t.Fatalf("without the guard the stale KV state is applied, as expected: %v", err)
	}
}

// TestHandledSetBounded: the successes remembered for the resync are swept
// once they are older than HandledFor, so the set holds about the objects
// handled within it, not every object ever handled.
func TestHandledSetBounded(t *testing.T) {
	t.Parallel()
	// A nanosecond: every entry is old by the next sweep.
	r := &Reconciler{cfg: Config{HandledFor: time.Nanosecond}, handled: map[string]time.Time{}, sweepAt: minSweep}
	for i := range 10 * minSweep {
		r.markHandled(fmt.Sprint("sessions/", i))
	}
	if n := r.HandledCount(); n >= minSweep {
		t.Errorf("%d successes remembered, want fewer than %d", n, minSweep)
	}
}

// TestResyncKeepsBindingsOfMixedCaseSettings: bindings are labelled with
// the project's key (the id lower-cased), so the resync, finding a binding
// labelled "keep-N", must see that settings of project_id "Keep-N" still
// name it, and prune nothing.
func TestResyncKeepsBindingsOfMixedCaseSettings(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, _ := newReconciler(t, store)
	ctx := t.Context()
	key := fmt.Sprintf("keep-%d", time.Now().UnixNano()%1e9)
	r.cfg.Owner = spec.Owner{Instance: key} // its bindings are this installation's to prune
	ps := &ambientv1.ProjectSettings{Metadata: &ambientv1.ObjectReference{Id: key + "-ps", UpdatedAt: timestamppb.Now()},
		ProjectId: "K" + key[1:], GroupAccess: proto.String(`[{"group":"devs","role":"ambient-project-view"}]`)}
	b, err := proto.Marshal(events.Wrap(ps))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_PROJECT_SETTINGS, ps.GetMetadata().GetId()), b); err != nil {
		t.Fatal(err)
	}
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, ps, nil, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	o, err := r.PruneOrphanBindings(ctx, key)
	if err != nil || o.Deleted != 0 {
		t.Fatalf("PruneOrphanBindings(%q) pruned %d, %v; want nothing: settings of %q name the project", key, o.Deleted, err, ps.GetProjectId())
	}
	cs, err := kubernetes.NewForConfig(kube.Env(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(key).Get(ctx, "ambient-devs-ambient-project-view", metav1.GetOptions{}); err != nil {
		t.Fatalf("binding of project %s: %v", ps.GetProjectId(), err)
	}
}
