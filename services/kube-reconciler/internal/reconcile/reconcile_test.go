package reconcile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/transport"
)

func kv(tb testing.TB) jetstream.KeyValue {
	tb.Helper()
	_, js := testenv.JetStream(tb, testenv.NATS(tb))
	kv, err := bus.EnsureKV(tb.Context(), js, bus.ObjectsBucket(1))
	if err != nil {
		tb.Fatal(err)
	}
	return kv
}

func sessionAt(id, prompt string, at time.Time) *ambientv1.Session {
	return &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: id, UpdatedAt: timestamppb.New(at)}, Name: "n", ProjectId: proto.String("p"), Prompt: proto.String(prompt)}
}

func put(tb testing.TB, kv jetstream.KeyValue, s *ambientv1.Session) {
	tb.Helper()
	b, err := proto.Marshal(events.Wrap(s))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := kv.Put(tb.Context(), events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, s.GetMetadata().GetId()), b); err != nil {
		tb.Fatal(err)
	}
}

// TestNewest: the reconciler acts on the newest state: KV when it is newer
// than the event, the event otherwise; a DELETED event is a delete unless the
// object came back since.
func TestNewest(t *testing.T) {
	t.Parallel()
	store := kv(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old, cur := sessionAt("a", "old", t0), sessionAt("a", "new", t0.Add(time.Second))
	put(t, store, cur)
	put(t, store, sessionAt("c", "kv-older", t0))
	tests := []struct {
		name       string
		ev         *eventsv1.ResourceEvent
		wantPrompt string
		deleted    bool
	}{
		{"kv newer wins", events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, old, nil, t0), "new", false},
		{"event as new as kv", events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, cur, nil, t0), "new", false},
		{"event newer than kv", events.NewEvent(eventsv1.EventType_EVENT_TYPE_MODIFIED, sessionAt("c", "event", t0.Add(time.Minute)), nil, t0), "event", false},
		{"absent from kv", events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, sessionAt("b", "only", t0), nil, t0), "only", false},
		{"deleted", events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, sessionAt("b", "gone", t0), nil, t0), "gone", true},
		{"deleted but back", events.NewEvent(eventsv1.EventType_EVENT_TYPE_DELETED, old, nil, t0), "new", false},
	}
	for _, tc := range tests {
		obj, deleted, err := newest(t.Context(), store, tc.ev)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := obj.GetSession().GetPrompt(); got != tc.wantPrompt || deleted != tc.deleted {
			t.Errorf("%s: prompt %q deleted %v, want %q %v", tc.name, got, deleted, tc.wantPrompt, tc.deleted)
		}
	}
}

// noStatus fails the benchmark if a session is reported invalid.
type noStatus struct{ tb testing.TB }

func (n noStatus) UpdateSessionStatus(_ context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error) {
	n.tb.Errorf("unexpected UpdateSessionStatus for %s", req.GetId())
	return nil, fmt.Errorf("unexpected")
}

func (n noStatus) UpdateProject(_ context.Context, req *ambientv1.UpdateProjectRequest) (*ambientv1.Project, error) {
	n.tb.Errorf("unexpected UpdateProject for %s", req.GetId())
	return nil, fmt.Errorf("unexpected")
}

func (n noStatus) GetSession(_ context.Context, id string) (*ambientv1.Session, error) {
	n.tb.Errorf("unexpected GetSession for %s", id)
	return nil, fmt.Errorf("unexpected")
}

func (n noStatus) GetProject(_ context.Context, id string) (*ambientv1.Project, error) {
	n.tb.Errorf("unexpected GetProject for %s", id)
	return nil, fmt.Errorf("unexpected")
}

func (n noStatus) ListProjectSettings(context.Context) ([]*ambientv1.ProjectSettings, error) {
	n.tb.Errorf("unexpected ListProjectSettings")
	return nil, fmt.Errorf("unexpected")
}

// newReconciler returns a Reconciler on the package's kube-apiserver and
// store, whose Kubernetes clients' transport is wrapped by each of wrap.
func newReconciler(tb testing.TB, store jetstream.KeyValue, wrap ...transport.WrapperFunc) (*Reconciler, dynamic.Interface) {
	tb.Helper()
	env := kube.Env(tb)
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 1000, 2000
	for _, w := range wrap {
		cfg.WrapTransport = transport.Wrappers(cfg.WrapTransport, w)
	}
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		tb.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(&cfg)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := metrics.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := New(Config{Objects: store, Applier: apply.New(cs, dyn, env.Watcher(tb, slog.New(slog.DiscardHandler))), API: noStatus{tb}, Source: noStatus{tb}, Selector: session.Selector{},
		RoleAllowList: []string{"ambient-project-admin", "ambient-project-edit", "ambient-project-view"}, DefaultNamespace: "default", Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return r, dyn
}

// BenchmarkReconcileSessions reconciles 1,000 sessions per iteration on the
// real kube-apiserver (create, then a no-op replay) by calling Handle
// directly and reports reconciles/s: one at a time (workers=1, the rate
// before issue 15) and with as many calls at once as a consumer-group
// member has objects in flight (workers=64, group.DefaultMaxInFlight), the
// direct rate kube-reconciler's end-to-end benchmark is compared with. It
// also reports the CPU per create of the benchmark process, the
// kube-apiserver and etcd, to set beside the end-to-end benchmark's.
func BenchmarkReconcileSessions(b *testing.B) {
	for _, workers := range []int{1, group.DefaultMaxInFlight} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) { benchReconcile(b, workers) })
	}
}

func benchReconcile(b *testing.B, workers int) {
	b.Helper()
	store := kv(b)
	r, dyn := newReconciler(b, store)
	ctx := b.Context()
	const n = 1000
	var created, replayed time.Duration
	used := map[string]time.Duration{} // CPU by process over the create passes
	iter := 0
	for b.Loop() {
		iter++
		project := fmt.Sprintf("bench-%d-%d-%d", workers, time.Now().UnixNano()%1e6, iter)
		evs := make([]*eventsv1.ResourceEvent, n)
		for i := range n {
			s := sessionAt(fmt.Sprintf("%s-s%d", project, i), "go", time.Now())
			s.ProjectId = proto.String(project)
			s.Repos = proto.String(`[{"url":"https://git/x"}]`)
			evs[i] = events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now())
		}
		for _, pass := range []*time.Duration{&created, &replayed} {
			cpu0 := testenv.CPUByProcess(b, "bench-process", "kube-apiserver", "etcd")
			start := time.Now()
			handleAll(b, r, evs, workers)
			*pass += time.Since(start)
			if pass == &created {
				for name, cpu := range testenv.CPUByProcess(b, "bench-process", "kube-apiserver", "etcd") {
					used[name] += cpu - cpu0[name]
				}
			}
		}
		list, err := dyn.Resource(apply.AgenticSessionGVR).Namespace(project).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != n {
			b.Fatalf("%d CRs (%v), want %d", len(list.Items), err, n)
		}
	}
	b.ReportMetric(float64(n*iter)/created.Seconds(), "creates/s")
	b.ReportMetric(float64(n*iter)/replayed.Seconds(), "noop-reconciles/s")
	for name, cpu := range used {
		b.ReportMetric(float64(cpu.Microseconds())/float64(n*iter), name+"-cpu-µs/create")
	}
}

// handleAll calls r.Handle for every event, workers at a time.
func handleAll(b testing.TB, r *Reconciler, evs []*eventsv1.ResourceEvent, workers int) {
	b.Helper()
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	next := make(chan *eventsv1.ResourceEvent) // unbuffered: one event per take
	for range workers {
		wg.Go(func() {
			for ev := range next {
				if err := r.Handle(b.Context(), group.Message{Event: ev, Attempt: 1}); err != nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for _, ev := range evs {
		next <- ev
	}
	close(next)
	wg.Wait()
	if err := first.Load(); err != nil {
		b.Fatal(*err)
	}
}
