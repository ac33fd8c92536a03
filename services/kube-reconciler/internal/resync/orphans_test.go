package resync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// ownsAll owns every partition.
type ownsAll struct{}

func (ownsAll) Owned() []int           { return []int{0} }
func (ownsAll) OwnsObject(string) bool { return true }

// crsOf lists AgenticSessions of the given sessions, all created long ago.
type crsOf []string

func (crsOf) HasSynced() bool { return true }
func (c crsOf) Sessions() map[string]time.Time {
	out := map[string]time.Time{}
	for _, id := range c {
		out[id] = time.Now().Add(-time.Hour)
	}
	return out
}

// orphanRec deletes every orphan but those in fail, which fail as a
// Kubernetes outage of that one object would.
type orphanRec struct {
	fail map[string]bool

	mu       sync.Mutex
	sessions []string
	projects []string
}

func (o *orphanRec) ResyncObject(context.Context, eventsv1.Resource, string) (string, error) {
	return metrics.ResultUnchanged, nil
}

func (o *orphanRec) DeleteOrphanSession(_ context.Context, id string) (reconcile.Orphan, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sessions = append(o.sessions, id)
	if o.fail[id] {
		return reconcile.Orphan{}, fmt.Errorf("delete agenticsession of %s: %w", id, errors.New("connection refused"))
	}
	return reconcile.Orphan{Deleted: 1}, nil
}

func (o *orphanRec) PruneOrphanBindings(_ context.Context, p string) (reconcile.Orphan, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.projects = append(o.projects, p)
	if o.fail[p] {
		return reconcile.Orphan{}, fmt.Errorf("prune rolebindings of %s: %w", p, errors.New("connection refused"))
	}
	return reconcile.Orphan{Deleted: 1}, nil
}

func (o *orphanRec) StartPass() {}

// TestOrphanFailureDoesNotStopThePass: an orphan whose deletion fails is
// counted and logged, and the others, and the RoleBinding step, still run;
// the next pass retries it. One failing CR used to end the pass's orphan
// cleanup and skip every orphan RoleBinding.
func TestOrphanFailureDoesNotStopThePass(t *testing.T) {
	t.Parallel()
	_, js := testenv.JetStream(t, testenv.NATS(t))
	objects, err := bus.EnsureKV(t.Context(), js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	const instance = "orphans"
	var rbs []*rbacv1.RoleBinding
	for _, p := range []string{"p-bad", "p-good1", "p-good2"} {
		l := spec.ManagedLabels(p)
		l[spec.LabelInstance] = instance
		rbs = append(rbs, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ambient-g-view", Namespace: p, Labels: l,
			CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))}})
	}
	kube := fake.NewClientset(rbs[0], rbs[1], rbs[2])
	m, err := metrics.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &orphanRec{fail: map[string]bool{"s-bad": true, "p-bad": true}}
	r, err := New(Config{Objects: objects, Reconciler: rec, CRs: crsOf{"s-bad", "s-good1", "s-good2"}, Kube: kube, Assignment: ownsAll{},
		Owner: spec.Owner{Instance: instance}, Interval: time.Minute, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := r.Pass(t.Context())
	if err != nil {
		t.Fatalf("Pass = %v, want nil: single orphans' failures are counted, not the pass's", err)
	}
	if len(rec.sessions) != 3 || len(rec.projects) != 3 {
		t.Errorf("orphans tried: sessions %v, projects %v; want all 3 of each", rec.sessions, rec.projects)
	}
	if sum.Orphans != 4 || sum.OrphansFailed != 2 {
		t.Errorf("summary %+v, want 4 orphans deleted and 2 failed", sum)
	}
}
