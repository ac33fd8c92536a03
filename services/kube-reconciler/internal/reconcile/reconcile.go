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
	"github.com/ambient-code/control-plane/libs/logkey"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/types"
)

// ErrInvalidConfig is returned by New for a Config missing a dependency.
var ErrInvalidConfig = errors.New("invalid reconciler config")

// statusWriter is the one API call the event path makes: reporting a session
// whose fields can never produce an AgenticSession.
type statusWriter interface {
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
}

// sessionTracker is what the status write-back (package status) learns from
// the event path: the session as last seen, and which CRs belong to a session.
type sessionTracker interface {
	Observe(s *ambientv1.Session, cr types.NamespacedName)
	Forget(sessionID string)
	CRsOf(sessionID string) []types.NamespacedName
}

// Config holds the Reconciler's dependencies and settings.
type Config struct {
	Objects objectReader   // KV ambient-objects
	Applier *apply.Applier // Kubernetes writes
	API     statusWriter   // UpdateSessionStatus for bad input
	Tracker sessionTracker // status write-back; nil disables it
	// Selector picks the sessions run on Kubernetes.
	Selector Selector
	// RoleAllowList is the set of ClusterRoles group_access may bind.
	RoleAllowList []string
	// DefaultNamespace holds the AgenticSessions of sessions without a project.
	DefaultNamespace string
	Metrics          *metrics.Metrics
	Log              *slog.Logger
	// TracerProvider makes the reconcile spans (nil: the OTel global, which
	// telemetry.Setup installs).
	TracerProvider trace.TracerProvider
}

// Reconciler handles events. It is safe for concurrent use.
type Reconciler struct {
	cfg    Config
	tracer trace.Tracer

	mu      sync.Mutex
	ensured map[string]string // guarded by mu: namespace -> project id applied by this process
}

// New validates cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Objects == nil || cfg.Applier == nil || cfg.API == nil || cfg.Metrics == nil || cfg.Log == nil {
		return nil, fmt.Errorf("objects, applier, api, metrics and log are required: %w", ErrInvalidConfig)
	}
	if cfg.DefaultNamespace == "" {
		return nil, fmt.Errorf("default namespace is required: %w", ErrInvalidConfig)
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Reconciler{cfg: cfg, tracer: tp.Tracer("github.com/ambient-code/control-plane/services/kube-reconciler"), ensured: map[string]string{}}, nil
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
		r.cfg.Metrics.Observe(res, result, time.Since(start))
	}()

	obj, deleted, err := newest(ctx, r.cfg.Objects, ev)
	if err != nil {
		return err
	}
	switch o := obj.GetKind().(type) {
	case *eventsv1.Object_Session:
		result, err = r.session(ctx, o.Session, deleted, log)
	case *eventsv1.Object_Project:
		result, err = r.project(ctx, o.Project, deleted, log)
	case *eventsv1.Object_ProjectSettings:
		result, err = r.settings(ctx, o.ProjectSettings, deleted, log)
	default:
		// events.Decode already refused events without an object; this is a
		// programming error upstream, never worth a retry.
		return group.Terminal(fmt.Errorf("event %s without object", ev.GetEventId()))
	}
	return err
}
