// Package reconcile turns ambient events into Kubernetes state. It is the
// consumer-group handler of the kube-reconciler: for each event it takes the
// newest state of the object (the event's, or KV ambient-objects' when that is
// newer), computes the desired objects (package spec) and writes them with
// server-side apply (package apply). It is level-triggered: replaying any
// event, in any number, converges on the same objects and writes nothing new.
//
// Result contract of Handle (see libs/group): nil acks the event, including
// for bad input that was reported (session phase Failed with a condition, or
// a log line and a metric for projects and settings); any other error is
// retried with backoff and dead-lettered after the last try.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/keylock"
	"github.com/ambient-code/control-plane/libs/kubelabel"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// ErrInvalidConfig is returned by New for a Config missing a dependency.
var ErrInvalidConfig = errors.New("invalid reconciler config")

// statusWriter is what the event path writes to the API: why a session can
// get no AgenticSession (bad fields, refused namespace), and why a project
// gets no namespace.
type statusWriter interface {
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
	UpdateProject(ctx context.Context, req *ambientv1.UpdateProjectRequest) (*ambientv1.Project, error)
}

// sessionTracker is what the status write-back (package status) learns from
// the event path: the session as last seen, which CRs belong to a session,
// and the cached copy of a CR (to skip applies that would change nothing).
type sessionTracker interface {
	Observe(s *ambientv1.Session, cr types.NamespacedName)
	Forget(sessionID string)
	CRsOf(sessionID string) []types.NamespacedName
	CachedCR(cr types.NamespacedName) (*unstructured.Unstructured, bool)
}

// sourceReader is what the resync's orphan checks read from the ambient API
// before deleting anything: KV ambient-objects may be empty or behind.
type sourceReader interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	GetProject(ctx context.Context, id string) (*ambientv1.Project, error)
	ListProjectSettings(ctx context.Context) ([]*ambientv1.ProjectSettings, error)
}

// partitions is this member's share of the consumer group's partitions
// (*group.Assignment), which the resync's writes must stay within.
type partitions interface {
	OwnsObject(objectID string) bool
	State() (partitions int, owned []int, changed <-chan struct{})
}

var _ partitions = (*group.Assignment)(nil)

// Config holds the Reconciler's dependencies and settings.
type Config struct {
	Objects jetstream.KeyValue // KV ambient-objects
	Applier *apply.Applier     // Kubernetes writes
	API     statusWriter       // UpdateSessionStatus for bad input
	Source  sourceReader       // confirms the resync's orphans (resync.go)
	Tracker sessionTracker     // status write-back; nil disables it
	// Selector picks the sessions run on Kubernetes.
	Selector session.Selector
	// RoleAllowList is the set of ClusterRoles group_access may bind.
	RoleAllowList []string
	// DefaultNamespace holds the AgenticSessions of sessions without a
	// project; no project may have it as its namespace.
	DefaultNamespace string
	// Owner is this installation: its Instance (LabelInstance) is put on
	// every AgenticSession and RoleBinding it writes ("" puts none), and
	// only the RoleBindings it Owns are pruned, so two installations that
	// manage the same project id never delete each other's bindings.
	Owner spec.Owner
	// NamespaceDenyList are the namespaces no project may have (patterns).
	NamespaceDenyList spec.DenyList
	Metrics           *metrics.Metrics
	Log               *slog.Logger
	// HandledFor is how long a success of the event path keeps the resync
	// away from the object (the resync's grace, resync.Grace); 0 remembers
	// nothing, and the resync then never waits for the event path.
	HandledFor time.Duration
	// TracerProvider makes the reconcile spans (nil: the OTel global, which
	// telemetry.Setup installs).
	TracerProvider trace.TracerProvider
	// Partitions is this member's share of the consumer group: the resync
	// writes an object only while the member owns its partition
	// (ResyncObject). Nil: every object (a group of one).
	Partitions partitions
}

// Reconciler handles events. It is safe for concurrent use.
type Reconciler struct {
	cfg    Config
	tracer trace.Tracer

	// keys serializes the event path and the resync per object (lockKey),
	// so a resync never interleaves with a handler of the same object in
	// this process. One lock per key: the lock is held over the
	// Kubernetes calls, and with the hashed k8s.io/utils/keymutex (256
	// locks) about 14 of 64 handlers in flight waited on an unrelated
	// object. No code path holds two keys.
	keys keylock.Map
	// namespaceChecks shares a namespace check in flight among the
	// callers that want it (ensureNamespace).
	namespaceChecks singleflight.Group

	mu      sync.Mutex
	ensured map[string]string    // guarded by mu: namespace -> project id applied by this process
	handled map[string]time.Time // guarded by mu: lockKey -> last success of the event path (see resync.go)
	sweepAt int                  // guarded by mu: size of handled at which old entries are dropped
	// guarded by mu: the API's project settings for this pass's orphan
	// checks (resync.go); nil until listed.
	apiSettings map[string]string
}

// minSweep is the smallest size of the handled set worth sweeping.
const minSweep = 1024

// New validates cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Objects == nil || cfg.Applier == nil || cfg.API == nil || cfg.Source == nil || cfg.Metrics == nil || cfg.Log == nil {
		return nil, fmt.Errorf("objects, applier, api, source, metrics and log are required: %w", ErrInvalidConfig)
	}
	if cfg.DefaultNamespace == "" {
		return nil, fmt.Errorf("default namespace is required: %w", ErrInvalidConfig)
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Reconciler{cfg: cfg, tracer: tp.Tracer("github.com/ambient-code/control-plane/services/kube-reconciler"),
		ensured: map[string]string{}, handled: map[string]time.Time{}, sweepAt: minSweep}, nil
}

// Handle is the group.Handler: it reconciles the object of m.Event.
func (r *Reconciler) Handle(ctx context.Context, m group.Message) (err error) {
	ev := m.Event
	res := events.ResourceToken(ev.GetResource())
	// INTERNAL: the CONSUMER span around this call is group's, the same in
	// every consumer.
	ctx, span := r.tracer.Start(ctx, "reconcile "+res,
		trace.WithAttributes(
			attribute.String("ambient.resource", res),
			attribute.String("ambient.object_id", ev.GetObjectId()),
			attribute.String("ambient.event_type", events.TypeName(ev.GetType())),
			attribute.Int64("messaging.nats.attempt", int64(m.Attempt)),
		))
	log := r.cfg.Log.With(slog.String(logkey.Resource, res), slog.String(logkey.ObjectID, ev.GetObjectId()),
		slog.String(logkey.Version, ev.GetVersion()), slog.Uint64(logkey.Attempt, m.Attempt))
	start := time.Now()
	result := metrics.ResultOK
	defer func() {
		if err != nil {
			result = metrics.ResultError
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(attribute.String("ambient.result", result))
		span.End()
		r.cfg.Metrics.Observe(ctx, res, result, time.Since(start))
	}()

	key := lockKey(ev.GetResource(), ev.GetObjectId(), events.ProjectID(ev.GetObject()))
	var obj *eventsv1.Object
	obj, result, err = func() (*eventsv1.Object, string, error) {
		defer r.keys.Lock(key)()
		obj, deleted, err := newest(ctx, r.cfg.Objects, ev)
		if err != nil {
			return nil, metrics.ResultError, err
		}
		result, err := r.dispatch(ctx, obj, deleted, log)
		if err == nil {
			r.markHandled(key)
		}
		return obj, result, err
	}()
	if err != nil {
		return err
	}
	// After the new project's lock is released: no code path holds two.
	if old := movedFrom(ev, obj); old != "" {
		err = r.pruneMoved(ctx, ev.GetObjectId(), old, log)
	}
	return err
}

// dispatch reconciles obj by its kind.
func (r *Reconciler) dispatch(ctx context.Context, obj *eventsv1.Object, deleted bool, log *slog.Logger) (string, error) {
	switch o := obj.GetKind().(type) {
	case *eventsv1.Object_Session:
		return r.session(ctx, o.Session, deleted, log)
	case *eventsv1.Object_Project:
		return r.project(ctx, o.Project, deleted, log)
	case *eventsv1.Object_ProjectSettings:
		return r.settings(ctx, o.ProjectSettings, deleted, log)
	default:
		// events.Decode already refused events without an object; this is a
		// programming error upstream, never worth a retry.
		return metrics.ResultError, group.Terminal(fmt.Errorf("object %s without a kind", events.ObjectID(obj)))
	}
}

// lockKey is the per-object lock of (res, id): a session or project by its
// id, project settings by their project's kubelabel.ProjectKey, because
// what they write (the project's RoleBindings) is the project's, ids
// differing only in case write the same bindings, and the resync prunes
// orphaned bindings by the key it reads from their label.
func lockKey(res eventsv1.Resource, id, projectID string) string {
	if res == eventsv1.Resource_RESOURCE_PROJECT_SETTINGS {
		return "bindings/" + kubelabel.ProjectKey(projectID)
	}
	return events.ResourceToken(res) + "/" + id
}

// markHandled remembers a success of the event path for HandledFor. The
// set is swept whenever it doubled since the last sweep, so it holds about
// the objects handled within two HandledFor at most, in amortized O(1).
func (r *Reconciler) markHandled(key string) {
	if r.cfg.HandledFor <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handled[key] = time.Now()
	if len(r.handled) >= r.sweepAt {
		r.sweepLocked()
		r.sweepAt = max(minSweep, 2*len(r.handled))
	}
}

// sweepLocked drops successes older than HandledFor. Call with mu held.
func (r *Reconciler) sweepLocked() {
	for k, at := range r.handled {
		if time.Since(at) >= r.cfg.HandledFor {
			delete(r.handled, k)
		}
	}
}
