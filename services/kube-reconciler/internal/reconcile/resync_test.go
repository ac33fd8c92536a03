package reconcile

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

// movable is one member's share of the consumer group that a test moves
// away, as *group.Assignment reports it.
type movable struct {
	mu      sync.Mutex
	moved   bool          // guarded by mu
	changed chan struct{} // guarded by mu: closed by move
}

func newMovable() *movable { return &movable{changed: make(chan struct{})} }

func (m *movable) OwnsObject(string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.moved
}

func (m *movable) State() (int, []int, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.moved {
		return 1, nil, make(chan struct{})
	}
	return 1, []int{0}, m.changed
}

func (m *movable) move() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.moved = true
	close(m.changed)
}

// holdApplies holds every AgenticSession apply sent through it while hold
// is set, until its request's ctx ends or release is closed; applying gets
// a value as each is held.
type holdApplies struct {
	hold     atomic.Bool
	applying chan struct{} // buffered: the test takes one
	release  chan struct{}
}

func (h *holdApplies) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if h.hold.Load() && req.Method == http.MethodPatch && strings.Contains(req.URL.Path, "/"+spec.Resource+"/") {
			select {
			case h.applying <- struct{}{}:
			default:
			}
			select {
			case <-req.Context().Done():
				return nil, req.Context().Err()
			case <-h.release:
			}
		}
		return rt.RoundTrip(req)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestResyncAfterPartitionMovedLeavesDeletedSessionDeleted: a resync pass
// of the session's old owner and the DELETED its new owner handles, in the
// two windows between the pass's ownership check and its write. The new
// owner is another process (its own locks and recent successes), and KV
// still holds the session: the informer writes KV after it publishes. The
// old owner's resync must not bring the deleted session's CR back.
//
//   - moved before the write: the pass checked ownership, then waited for
//     the object's lock behind its handler of the session, which the move
//     cancelled and which handed the partition over as it ended; the new
//     owner deleted the CR before the pass got the lock.
//   - moved during the write: the apply was waiting (the client's rate
//     limiter, say) when the partition moved and the new owner deleted the
//     CR.
func TestResyncAfterPartitionMovedLeavesDeletedSessionDeleted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		during bool
	}{
		{"moved before the write", false},
		{"moved during the write", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := kv(t)
			held := &holdApplies{applying: make(chan struct{}, 1), release: make(chan struct{})}
			oldOwner, dyn := newReconciler(t, store, held.wrap)
			newOwner, _ := newReconciler(t, store)
			parts := newMovable()
			oldOwner.cfg.Partitions = parts
			ctx := t.Context()
			project := fmt.Sprintf("moved-%d", time.Now().UnixNano()%1e9)
			s := sessionAt(project+"-s", "go", time.Now())
			s.ProjectId = proto.String(project)
			id := s.GetMetadata().GetId()
			put(t, store, s)
			if err := oldOwner.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now()), Attempt: 1}); err != nil {
				t.Fatal(err)
			}
			crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(project)
			if _, err := crs.Get(ctx, id, metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}

			type outcome struct {
				result string
				err    error
			}
			done := make(chan outcome, 1) // one send
			resync := func() {
				// Owned by the test: it waits on done below.
				go func() {
					res, err := oldOwner.ResyncObject(ctx, eventsv1.Resource_RESOURCE_SESSIONS, id)
					done <- outcome{res, err}
				}()
			}
			moveAndDelete := func() {
				parts.move()
				if err := newOwner.Handle(ctx, group.Message{Event: events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, s, s, time.Now()), Attempt: 1}); err != nil {
					t.Fatal(err)
				}
				if _, err := crs.Get(ctx, id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Fatalf("the new owner's DELETED left the CR: %v", err)
				}
			}
			if tc.during {
				held.hold.Store(true)
				resync()
				select {
				case <-held.applying:
				case <-time.After(30 * time.Second):
					t.Fatal("the resync did not apply the session's CR")
				}
				moveAndDelete()
			} else {
				unlock := oldOwner.keys.Lock(lockKey(eventsv1.Resource_RESOURCE_SESSIONS, id, "")) // the old owner's handler
				resync()
				moveAndDelete()
				unlock()
			}
			var got outcome
			select {
			case got = <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("the resync's apply was still held 10s after its partition moved; released")
				close(held.release)
				got = <-done
			}
			if got.err != nil || got.result != metrics.ResultSkipped {
				t.Errorf("ResyncObject = %q, %v; want %q", got.result, got.err, metrics.ResultSkipped)
			}
			if cr, err := crs.Get(ctx, id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the old owner's resync re-created the CR of session %s after the new owner deleted it (created %s): %v",
					id, cr.GetCreationTimestamp(), err)
			}
		})
	}
}
