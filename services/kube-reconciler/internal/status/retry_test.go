package status

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
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// flakyAPI accepts every status write except the first one of session
// failID, which fails as an unreachable API does; it records when that
// write failed and when it was tried again. Its sessions are all of
// project (so each CR named after its session's id, in that namespace, is
// the session's current one).
type flakyAPI struct {
	failID  string
	project string

	mu       sync.Mutex
	failedAt time.Time
	retryAt  time.Time
}

func (f *flakyAPI) GetSession(_ context.Context, id string) (*ambientv1.Session, error) {
	return f.session(id), nil
}

func (f *flakyAPI) session(id string) *ambientv1.Session {
	return &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id}, ProjectId: &f.project}
}

func (f *flakyAPI) UpdateSessionStatus(_ context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.GetId() == f.failID {
		if f.failedAt.IsZero() {
			f.failedAt = time.Now()
			return nil, grpcstatus.Error(codes.Unavailable, "api unreachable")
		}
		if f.retryAt.IsZero() {
			f.retryAt = time.Now()
		}
	}
	// A bare session: every check of the CR writes again, which costs the
	// fake nothing and keeps each resync's re-check busy.
	return f.session(req.GetId()), nil
}

func (f *flakyAPI) times() (failed, retried time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failedAt, f.retryAt
}

// TestResyncDoesNotStarveRetries: informer resyncs of a few hundred CRs
// every second re-check each CR; a status write that fails meanwhile is
// retried within the per-CR backoff. When the resync went through the rate
// limiter, each one spent its shared bucket (10/s) on every CR, and the
// failed write's retry waited behind all of them: over a minute here, ten
// at 6000 CRs and the default resync.
func TestResyncDoesNotStarveRetries(t *testing.T) {
	env := kube.Env(t)
	instance := fmt.Sprintf("starve-%d", time.Now().UnixNano()%1e9)
	const n = 300
	ns := crFixture(t, env, instance, n)
	api := &flakyAPI{failID: "S-new", project: ns}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, js := testenv.JetStream(t, testenv.NATS(t))
	objects, err := bus.EnsureKV(t.Context(), js, bus.ObjectsBucket(1))
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Dynamic: dyn, API: api, Objects: objects, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Owner: spec.Owner{Instance: instance}, DefaultNamespace: "ambient-code", Resync: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	// A few resyncs of every CR.
	synced := time.Now()
	testenv.Eventually(t, 30*time.Second, func() error {
		if d := time.Since(synced); d < 3500*time.Millisecond {
			return fmt.Errorf("%s of resyncs", d)
		}
		return nil
	})

	// A new CR: no resync has queued it yet, so nothing but the retry of
	// its failed write (and the resyncs to come) brings it back.
	crs := dyn.Resource(apply.AgenticSessionGVR).Namespace(ns)
	cr, err := crs.Get(t.Context(), "s0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cr.SetName("s-new")
	cr.SetResourceVersion("")
	cr.SetUID("")
	cr.SetAnnotations(map[string]string{spec.AnnotationSessionID: api.failID})
	delete(cr.Object, "status")
	if _, err := crs.Create(t.Context(), cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if failed, _ := api.times(); failed.IsZero() {
			return errors.New("the status change was not written yet")
		}
		return nil
	})
	const bound = 10 * time.Second
	testenv.Eventually(t, bound, func() error {
		failed, retried := api.times()
		if retried.IsZero() {
			return fmt.Errorf("failed write not retried %s after it failed", time.Since(failed).Round(time.Millisecond))
		}
		return nil
	})
	failed, retried := api.times()
	t.Logf("failed write retried %s after it failed (%d CRs resynced every second)", retried.Sub(failed).Round(time.Millisecond), n)
}
