package reconcile

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// liveTracker is the status write-back's view of the AgenticSessions read
// straight from the kube-apiserver (a synced informer), or nothing while
// synced is false (a replica whose informer has not synced yet).
type liveTracker struct {
	ctx    context.Context //nolint:containedctx // the test's, for the reads of an interface without one
	dyn    dynamic.Interface
	synced atomic.Bool
}

// newLiveReconciler is newReconciler with a liveTracker, synced.
func newLiveReconciler(t *testing.T, store jetstream.KeyValue) (*Reconciler, dynamic.Interface, *liveTracker) {
	t.Helper()
	r, dyn := newReconciler(t, store)
	tracker := &liveTracker{ctx: t.Context(), dyn: dyn}
	tracker.synced.Store(true)
	r.cfg.Tracker = tracker
	return r, dyn, tracker
}

func (l *liveTracker) Observe(*ambientv1.Session, types.NamespacedName) {}

func (l *liveTracker) Forget(string) {}

func (l *liveTracker) CRsOf(id string) []types.NamespacedName {
	if !l.synced.Load() {
		return nil
	}
	list, err := l.dyn.Resource(apply.AgenticSessionGVR).List(l.ctx, metav1.ListOptions{LabelSelector: spec.ManagedSelector})
	if err != nil {
		return nil
	}
	var out []types.NamespacedName
	for _, u := range list.Items {
		if u.GetAnnotations()[spec.AnnotationSessionID] == id {
			out = append(out, types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()})
		}
	}
	return out
}

func (l *liveTracker) CachedCR(cr types.NamespacedName) (*unstructured.Unstructured, bool) {
	if !l.synced.Load() {
		return nil, false
	}
	u, err := l.dyn.Resource(apply.AgenticSessionGVR).Namespace(cr.Namespace).Get(l.ctx, cr.Name, metav1.GetOptions{})
	return u, err == nil
}

// TestMovedSessionLosesOldCRWhenUpToDate: a session moved to another project
// whose old CR was not removed when its new one was applied (the status
// informer had not synced yet after a restart, or the delete failed and the
// event is retried) loses the old CR on its next reconcile, even though the
// new CR is already up to date. Left behind, the old CR would run the
// session a second time in the old namespace for good: the resync only
// deletes CRs of sessions gone from the cache.
func TestMovedSessionLosesOldCRWhenUpToDate(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, dyn, tracker := newLiveReconciler(t, store)
	ctx := t.Context()
	from := fmt.Sprintf("mv-a-%d", time.Now().UnixNano()%1e9)
	to := fmt.Sprintf("mv-b-%d", time.Now().UnixNano()%1e9)
	t0 := time.Now()
	s := sessionAt(from+"-s", "go", t0)
	s.ProjectId = proto.String(from)
	handle := func(s *ambientv1.Session) {
		t.Helper()
		if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, s, nil, time.Now()), Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	handle(s)
	name := s.GetMetadata().GetId()
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(from).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("CR in %s: %v", from, err)
	}

	// Moved while the informer knows nothing: the new CR is applied, the
	// old one cannot be found yet.
	tracker.synced.Store(false)
	moved := proto.CloneOf(s)
	moved.ProjectId = proto.String(to)
	moved.Metadata.UpdatedAt = timestamppb.New(t0.Add(time.Second))
	handle(moved)
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(to).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("CR in %s: %v", to, err)
	}

	// Synced: the next reconcile (a retry, a replay, the resync) finds the
	// new CR up to date and the old one indexed for the session.
	tracker.synced.Store(true)
	handle(moved)
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(from).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("old CR %s/%s still there after the session moved to %s: %v", from, name, to, err)
	}
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(to).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("CR in %s: %v", to, err)
	}
}

// statusAPI answers UpdateSessionStatus with the session it was given the
// status of, as the API does, and counts the calls.
type statusAPI struct {
	noStatus
	s     *ambientv1.Session
	calls atomic.Int32
}

func (a *statusAPI) UpdateSessionStatus(_ context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	a.calls.Add(1)
	s := proto.CloneOf(a.s)
	s.Phase, s.Conditions = req.Phase, req.Conditions
	return s, nil
}

// TestSessionMovedIntoRefusedNamespaceLosesOldCR: a session moved from a
// project of ours to one whose namespace is refused gets no CR there and is
// Failed; the CR it had in its old namespace is deleted, or its status
// (still Running) would be written back over the refusal at every informer
// resync, and the agent would keep running for a session that says Failed.
// Nothing is written in the refused namespace itself.
func TestSessionMovedIntoRefusedNamespaceLosesOldCR(t *testing.T) {
	t.Parallel()
	store := kv(t)
	r, dyn, _ := newLiveReconciler(t, store)
	r.cfg.NamespaceDenyList = spec.DenyList{"kube-*"}
	ctx := t.Context()
	from := fmt.Sprintf("rf-a-%d", time.Now().UnixNano()%1e9)
	t0 := time.Now()
	s := sessionAt(from+"-s", "go", t0)
	s.ProjectId = proto.String(from)
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	name := s.GetMetadata().GetId()
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(from).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("CR in %s: %v", from, err)
	}

	moved := proto.CloneOf(s)
	moved.ProjectId = proto.String("kube-moved")
	moved.Metadata.UpdatedAt = timestamppb.New(t0.Add(time.Second))
	api := &statusAPI{noStatus: noStatus{t}, s: moved}
	r.cfg.API = api
	if err := r.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, moved, s, time.Now()), Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if api.calls.Load() != 1 {
		t.Fatalf("%d status writes, want the one refusal", api.calls.Load())
	}
	if _, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(from).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("old CR %s/%s still there after the session moved into a refused namespace: %v", from, name, err)
	}
}
