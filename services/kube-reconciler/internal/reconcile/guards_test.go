package reconcile

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestMalformedGroupAccessKeepsBindings: a group_access that is no longer
// valid JSON leaves the project's RoleBindings as they are. Treating it as
// an empty list would prune every binding, locking the project's users out
// over a typo. Handle is called directly, so the event is handled when it
// returns.
func TestMalformedGroupAccessKeepsBindings(t *testing.T) {
	t.Parallel()
	r, _ := newReconciler(t, kv(t))
	ctx := t.Context()
	project := fmt.Sprintf("ga-%d", time.Now().UnixNano()%1e9)
	t0 := time.Now()
	ps := &ambientv1.ProjectSettings{Metadata: &ambientv1.ObjectReference{Id: project + "-ps", UpdatedAt: timestamppb.New(t0)},
		ProjectId: project}
	cs, err := kubernetes.NewForConfig(kube.Env(t).Config)
	if err != nil {
		t.Fatal(err)
	}
	bindings := func() []string {
		t.Helper()
		list, err := cs.RbacV1().RoleBindings(project).List(ctx, metav1.ListOptions{LabelSelector: spec.ManagedSelector})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, rb := range list.Items {
			names = append(names, rb.Name)
		}
		return names
	}
	for i, ga := range []string{`[{"group":"devs","role":"ambient-project-view"}]`, `[{"group":"devs","role":`} {
		ps = proto.CloneOf(ps)
		ps.GroupAccess = proto.String(ga)
		ps.Metadata.UpdatedAt = timestamppb.New(t0.Add(time.Duration(i) * time.Second)) // each newer than the last
		if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, ps, nil, time.Now()), Attempt: 1}); err != nil {
			t.Fatalf("group_access %s: %v", ga, err)
		}
		if got := bindings(); len(got) != 1 || got[0] != "ambient-devs-ambient-project-view" {
			t.Fatalf("after group_access %s: bindings %v, want [ambient-devs-ambient-project-view]", ga, got)
		}
	}
}

// TestDeletedSessionLosesCRWhateverTheSelector: the selector decides which
// sessions get a CR, not which lose theirs. A session selected when its CR
// was made and no longer selected when it is deleted (its label was removed
// meanwhile) must still lose the CR, or it would be left behind for good.
func TestDeletedSessionLosesCRWhateverTheSelector(t *testing.T) {
	t.Parallel()
	r, dyn := newReconciler(t, kv(t))
	sel, err := session.ParseSelector("label=run-on=kube")
	if err != nil {
		t.Fatal(err)
	}
	r.cfg.Selector = sel
	ctx := t.Context()
	project := fmt.Sprintf("sel-%d", time.Now().UnixNano()%1e9)
	t0 := time.Now()
	s := sessionAt(project+"-s", "go", t0)
	s.ProjectId = proto.String(project)
	s.Labels = proto.String(`{"run-on":"kube"}`)
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, t0), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(project)
	if _, err := crs.Get(ctx, s.GetMetadata().GetId(), metav1.GetOptions{}); err != nil {
		t.Fatalf("CR of the selected session: %v", err)
	}
	gone := proto.CloneOf(s)
	gone.Labels = nil
	gone.Metadata.UpdatedAt = timestamppb.New(t0.Add(time.Second))
	if r.cfg.Selector.Selects(gone) {
		t.Fatal("the unlabelled session is still selected: the test would prove nothing")
	}
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, gone, s, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := crs.Get(ctx, s.GetMetadata().GetId(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("CR of the deleted session still there: %v", err)
	}
}
