// Package status writes AgenticSession status back to the ambient API. A
// client-go dynamic informer watches the AgenticSessions the control plane
// manages (label-selected); its handlers only enqueue namespace/name keys on a
// rate-limited workqueue (the sample-controller shape), and workers compare
// the CR's status with the session as last seen, calling UpdateSessionStatus
// only when the content differs. Our own writes echo back as session events;
// they compare equal and cause nothing, so the write-back never loops.
//
// Every replica watches every CR, but with Config.Assignment only the
// replica that owns the session's partition in the consumer group (the one
// that reconciles the session) checks and writes its status: replicas share
// the write-back as they share the events, instead of each reading KV and
// the API for every change and racing the others to write it. A replica
// that gains a partition checks its CRs at once, for changes made while
// another replica or none owned it (a dead owner's last ones).
//
// "Last seen" is the newest of: the session from the event path (Observe),
// the response of our own last write, and KV ambient-objects. When those say
// the status differs, a fresh GetSession confirms before writing, so a
// replica that owned the partition a moment ago, or a stale last seen, does
// not cause the same write twice. What is remembered of sessions is
// bounded: an LRU of CacheSize sessions, each trimmed to the fields the
// comparison reads (no prompt, no spec), so memory does not grow with every
// session ever seen (issue 14).
// A session evicted from it is compared with KV instead; the GetSession
// check still keeps duplicate writes away, at the price of one more read.
//
// Only a session's current CR carries status: a CR being deleted (held by
// the operator's finalizer), or not where the event path puts the session
// now (another project's namespace, an old kube_cr_name), writes nothing
// (current), so the old CR of a moved session never overwrites the new
// one's status.
//
// A start or stop made through the API is not undone by the CR's old phase:
// it is held and passed to the operator as annotations (request.go).
package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/kubewatch"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// ErrInvalidConfig is returned by New for a Config missing a dependency.
var ErrInvalidConfig = errors.New("invalid status config")

// sessionIndex indexes AgenticSessions by the session id annotation.
const sessionIndex = "session-id"

// sessionAPI is what the write-back calls on the ambient API.
type sessionAPI interface {
	GetSession(ctx context.Context, id string) (*ambientv1.Session, error)
	UpdateSessionStatus(ctx context.Context, req *ambientv1.UpdateSessionStatusRequest) (*ambientv1.Session, error)
}

// objectReader reads KV ambient-objects.
type objectReader interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
}

// Config configures a Controller.
type Config struct {
	Dynamic dynamic.Interface
	API     sessionAPI
	Objects objectReader
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Workers is the number of workers (default 2).
	Workers int
	// Resync re-checks every CR this often (default 10m; 0 keeps the default).
	Resync time.Duration
	// CacheSize bounds the sessions remembered as last seen (default
	// DefaultCacheSize).
	CacheSize int
	// Owner is this installation (Instance required): only the CRs it owns
	// are carried to the API and reported by Sessions.
	Owner spec.Owner
	// DefaultNamespace (required) holds the AgenticSessions of sessions
	// without a project, as in reconcile.Config: with the session's project
	// it tells which CR is the session's current one (current).
	DefaultNamespace string
	// RequestGrace is how long a start or stop this replica told the
	// operator may be missing from the CR, the CR unmoved, before it is
	// told again (default DefaultRequestGrace; 0 keeps the default): the
	// operator's clear-then-act must not be undone, a request it lost must
	// not be lost for good.
	RequestGrace time.Duration
	// Assignment, when set, limits the writes to sessions whose partition
	// this replica owns (the consumer group's, so the replica that
	// reconciles a session also carries its status); CRs of a partition it
	// gains are checked at once. Nil: every CR (a single writer).
	Assignment *group.Assignment
}

// DefaultCacheSize is the default of Config.CacheSize: a trimmed session is a
// few hundred bytes (more with long conditions), so this is a few MB.
const DefaultCacheSize = 10000

// Controller is the status write-back. Observe, Forget and CRsOf are safe for
// concurrent use, also before Run.
type Controller struct {
	cfg      Config
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]

	// seen: session id -> newest known status (trimmed); safe for
	// concurrent use. remember's read-compare-add runs under mu so two
	// writers cannot replace a newer state with an older one.
	mu   sync.Mutex
	seen *lru.Cache[string, *ambientv1.Session]

	// requests: what the start/stop protocol remembers per session (see
	// request.go).
	requests *requests

	// failures logs the retried write-back failures once per outage.
	failures *writeFailures
}

// New builds the informer and queue; Run starts them.
func New(cfg Config) (*Controller, error) {
	if cfg.Dynamic == nil || cfg.API == nil || cfg.Objects == nil || cfg.Metrics == nil || cfg.Log == nil {
		return nil, fmt.Errorf("dynamic, api, objects, metrics and log are required: %w", ErrInvalidConfig)
	}
	if cfg.Owner.Instance == "" {
		return nil, fmt.Errorf("owner instance is required: %w", ErrInvalidConfig)
	}
	if cfg.DefaultNamespace == "" {
		return nil, fmt.Errorf("default namespace is required: %w", ErrInvalidConfig)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.RequestGrace <= 0 {
		cfg.RequestGrace = DefaultRequestGrace
	}
	seen, err := lru.New[string, *ambientv1.Session](cfg.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("session cache: %w", err)
	}
	reqs, err := newRequests(cfg.CacheSize, cfg.RequestGrace)
	if err != nil {
		return nil, err
	}
	// This installation's CRs only: another installation's sessions are not
	// in our API, and watching its CRs would cost a cache entry each and a
	// KV and API read per change, for nothing (the harness of our own tests
	// shares one cluster between installations, and showed it). A selector
	// cannot say "our instance or unlabelled", so an installation that
	// adopts unlabelled CRs watches every managed one and sync skips the rest.
	selector := spec.InstanceSelector(cfg.Owner.Instance)
	if cfg.Owner.AdoptUnlabeled {
		selector = spec.ManagedSelector
	}
	sessions := cfg.Dynamic.Resource(apply.AgenticSessionGVR).Namespace(metav1.NamespaceAll)
	informer, err := kubewatch.NewInformer(cfg.Log, kubewatch.Source[*unstructured.UnstructuredList]{
		List: sessions.List, Watch: sessions.Watch, Tweak: func(o *metav1.ListOptions) { o.LabelSelector = selector },
		Client: cfg.Dynamic, Resource: apply.AgenticSessionGVR.Resource,
	}, &unstructured.Unstructured{}, cache.SharedIndexInformerOptions{ResyncPeriod: cfg.Resync, Indexers: cache.Indexers{sessionIndex: indexBySession}, ObjectDescription: apply.AgenticSessionGVR.String()})
	if err != nil {
		return nil, err
	}
	if err := informer.SetTransform(stripManagedFields); err != nil {
		return nil, fmt.Errorf("set transform: %w", err)
	}
	c := &Controller{
		cfg:      cfg,
		informer: informer,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(retryLimiter(),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "agenticsession-status"}),
		seen:     seen,
		requests: reqs,
		failures: newWriteFailures(),
	}
	_, err = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			o, okO := oldObj.(*unstructured.Unstructured)
			n, okN := newObj.(*unstructured.Unstructured)
			if okO && okN && o.GetResourceVersion() == n.GetResourceVersion() {
				// A resync delivers the same object again; our state cache
				// may be behind though (a restart), so check it anyway.
				// Not through the rate limiter: its bucket is shared, and
				// a resync of thousands of CRs would spend it and hold a
				// failed write's retry back for minutes. The queue
				// de-duplicates, and a check that finds nothing to write
				// costs no API call.
				c.queue.Add(key(n))
				return
			}
			c.enqueue(newObj)
		},
		// A deleted CR has no status to carry; the session keeps its last one.
	})
	if err != nil {
		return nil, fmt.Errorf("add event handler: %w", err)
	}
	return c, nil
}

// MaxRetryDelay caps the wait before a failed status write is retried. The
// client-go default (1000 s) grew during an API outage so that a change made
// in it reached the API minutes after the API was back (a 90 s outage: 2m36s
// after); with this cap it is retried within seconds of the API's return.
const MaxRetryDelay = 5 * time.Second

// retryLimiter paces the retries of failed writes, and only those (resyncs
// and changes are added without it): per CR, 5 ms doubling up to
// MaxRetryDelay, and overall at most 10 per second after a burst of 100 (the
// client-go default's bucket), so many CRs failing at once do not hammer
// an API that answers with errors.
func retryLimiter() workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, MaxRetryDelay),
		&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
}

// stripManagedFields drops metadata.managedFields before an AgenticSession
// enters the cache: nothing here reads them (UpToDate compares the apply
// body's fields, the write-back the status), and with two field managers
// (ours, the operator's status) they are a large part of each cached CR.
func stripManagedFields(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
	}
	return obj, nil
}

func indexBySession(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	if id := u.GetAnnotations()[spec.AnnotationSessionID]; id != "" {
		return []string{id}, nil
	}
	return nil, nil
}

func key(u *unstructured.Unstructured) string { return u.GetNamespace() + "/" + u.GetName() }

func (c *Controller) enqueue(obj any) {
	k, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(k)
}

// HasSynced reports whether the informer's cache is filled (readiness).
func (c *Controller) HasSynced() bool { return c.informer.HasSynced() }

// Run starts the informer and the workers and blocks until ctx is done; then
// it shuts the queue down and waits for the workers and the informer.
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	// Deferred in this order: the queue shuts down, then the workers and
	// the informer are awaited.
	defer wg.Wait()
	defer c.queue.ShutDown()
	wg.Go(func() { c.informer.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return fmt.Errorf("wait for agenticsession cache: %w", ctx.Err())
	}
	c.cfg.Log.InfoContext(ctx, "status write-back started", slog.Int(logkey.Count, c.cfg.Workers))
	for range c.cfg.Workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.runWorker, time.Second) })
	}
	if c.cfg.Assignment != nil {
		wg.Go(func() { c.followAssignment(ctx) })
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	k, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(k)
	err := c.sync(ctx, k)
	switch {
	case err == nil:
		c.queue.Forget(k)
		c.failures.done(ctx, c.cfg.Log, k)
	case errors.Is(err, errPermanent):
		// Retrying cannot help (the API refused the content): report and
		// wait for the CR to change.
		c.queue.Forget(k)
		c.failures.done(ctx, c.cfg.Log, k)
		c.cfg.Log.ErrorContext(ctx, "status write-back refused", slog.String(logkey.Name, k), slog.Any(logkey.Err, err))
	case ctx.Err() != nil:
		// Stopping: the error is the cancellation, not worth a warning per
		// queued CR (a replica stopping with a partition just gained had
		// hundreds). The next start checks every CR again.
	default:
		c.queue.AddRateLimited(k)
		c.failures.failed(ctx, c.cfg.Log, k, err)
	}
	return true
}

var errPermanent = errors.New("permanent")

// sync carries the status of CR k to its session when it differs.
func (c *Controller) sync(ctx context.Context, k string) error {
	obj, exists, err := c.informer.GetIndexer().GetByKey(k)
	if err != nil || !exists {
		return nil // deleted since it was queued: nothing to carry
	}
	cr, ok := obj.(*unstructured.Unstructured)
	if !ok || !c.cfg.Owner.Owns(cr.GetLabels()) {
		return nil // another installation's
	}
	id := cr.GetAnnotations()[spec.AnnotationSessionID]
	if id == "" {
		return nil // not ours to map: no session annotation
	}
	if c.cfg.Assignment != nil && !c.cfg.Assignment.OwnsObject(id) {
		// The owner writes it, or the next owner once the partition moves
		// (followAssignment): checking here too would map the status and
		// read KV and the API for nothing, and race the owner to the same
		// write.
		c.cfg.Metrics.StatusNotOwned(ctx)
		phase, _, _ := unstructured.NestedString(cr.Object, "status", "phase")
		c.cfg.Log.DebugContext(ctx, "status left to the partition owner", slog.String(logkey.SessionID, id), slog.String(logkey.Phase, phase))
		return nil
	}
	req, bad := FromCR(cr)
	log := c.cfg.Log.With(slog.String(logkey.SessionID, req.GetId()), slog.String(logkey.Name, k))
	if len(bad) > 0 {
		log.WarnContext(ctx, "agenticsession status fields skipped", slog.Any(logkey.Reason, bad))
	}
	last, err := c.lastSeen(ctx, req.GetId())
	if err != nil {
		return err
	}
	if last, ok, err = c.ofCurrent(ctx, k, cr, last); err != nil || !ok {
		return err
	}
	// What the CR holds for the API as last seen: a status difference, or
	// a start or stop still to be told to the operator.
	heldReq, pending := c.held(req, last, cr)
	heldReq = conditionsFor(heldReq, last)
	if !Differs(heldReq, last) && (pending == nil || !c.mustTell(k, req.GetId(), pending, cr).tell) {
		c.cfg.Metrics.StatusUnchanged(ctx)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if write, ok := withoutRead(heldReq, pending, last, cr); ok {
		return c.write(ctx, cctx, write, log)
	}
	fresh, err := c.read(cctx, req.GetId())
	if err != nil || fresh == nil {
		return err // nil: the session is gone; its DELETED event removes the CR
	}
	if !c.current(fresh, cr) {
		c.replaced(ctx, id, k, "not the session's current agenticsession")
		return nil
	}
	// Decided again on the fresh session: telling the operator to stop or
	// start on a stale phase would act against the user.
	req, pending = c.held(req, fresh, cr)
	req = conditionsFor(req, fresh)
	if withdrawsStart(session.PhaseOf(fresh), cr) {
		// The platform's backend stops with desired-phase Stopped
		// whatever the CR's phase: it replaces the start.
		if err := tell(cctx, c.cfg.Dynamic, cr, &stopRequest, time.Now()); err != nil {
			return err
		}
		log.InfoContext(ctx, "session stopped before the operator started it: start withdrawn")
	}
	if pending != nil {
		if err := c.tellPending(ctx, cctx, k, req.GetId(), cr, pending, log); err != nil {
			return err
		}
	}
	if !Differs(req, fresh) {
		c.cfg.Metrics.StatusUnchanged(ctx)
		return nil
	}
	return c.write(ctx, cctx, req, log)
}

// mustTell decides whether pending is to be annotated on CR k (of session
// id) now (requests.mustTell) and, for a told request whose annotation is
// gone within the grace, queues k again for when the grace ends: nothing
// else may bring the CR back before the informer's resync (10 m).
func (c *Controller) mustTell(k, id string, pending *request, cr *unstructured.Unstructured) telling {
	t := c.requests.mustTell(id, pending, cr, time.Now())
	if t.recheck > 0 {
		c.queue.AddAfter(k, t.recheck)
	}
	return t
}

// tellPending annotates pending on CR k of session id when it has to be
// (mustTell), ctx for logs, cctx for the call.
func (c *Controller) tellPending(ctx, cctx context.Context, k, id string, cr *unstructured.Unstructured, pending *request, log *slog.Logger) error {
	t := c.mustTell(k, id, pending, cr)
	if !t.tell {
		return nil
	}
	now := time.Now()
	if err := tell(cctx, c.cfg.Dynamic, cr, pending, now); err != nil {
		return err
	}
	c.requests.markTold(id, pending, cr, now)
	if t.again {
		log.InfoContext(ctx, "session start/stop passed to the operator again: its annotation is gone and the agenticsession has not moved",
			slog.String(logkey.Phase, pending.desired), slog.Duration(logkey.Duration, now.Sub(t.firstTold)))
		return nil
	}
	log.InfoContext(ctx, "session start/stop passed to the operator", slog.String(logkey.Phase, pending.desired))
	return nil
}

// ofCurrent returns the session of cr to compare cr's status with, and
// false when cr is not the session's current CR (logged) or the session is
// gone. A CR being deleted never is: the operator's finalizer holds it
// while it tears the runner down (the session was deleted, moved or
// refused), its status is the teardown's, and the session may already
// have a new CR. Otherwise the session is last when cr is the current CR
// by it (or last is nil: nothing known, the fresh read of sync decides).
// A CR that is not is most likely the old CR of a moved session, but last
// may be behind the API (a move back): the session as the API has it now
// decides, or the current CR would wait for its next event to be carried.
func (c *Controller) ofCurrent(ctx context.Context, k string, cr *unstructured.Unstructured, last *ambientv1.Session) (*ambientv1.Session, bool, error) {
	if cr.GetDeletionTimestamp() != nil {
		c.replaced(ctx, cr.GetAnnotations()[spec.AnnotationSessionID], k, "being deleted")
		return nil, false, nil
	}
	if last == nil || c.current(last, cr) {
		return last, true, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id := cr.GetAnnotations()[spec.AnnotationSessionID]
	s, err := c.read(rctx, id)
	if err != nil || s == nil {
		return nil, false, err // nil: the session is gone; its DELETED event removes the CR
	}
	if !c.current(s, cr) {
		c.replaced(ctx, id, k, "not the session's current agenticsession")
		return nil, false, nil
	}
	return s, true, nil
}

// read returns session id as the API has it now, nil when it is gone, and
// remembers it.
func (c *Controller) read(ctx context.Context, id string) (*ambientv1.Session, error) {
	s, err := c.cfg.API.GetSession(ctx, id)
	if grpcstatus.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	c.remember(s)
	return s, nil
}

// current reports whether cr is the AgenticSession session s has now: in
// the namespace and under the name the event path applies for s
// (spec.SessionNamespace of its project, spec.CRName). A session moved to
// another project, or whose kube_cr_name changed, keeps its old CR until
// the event path deletes it, longer under the operator's finalizer, and
// the old CR's status changes meanwhile (the operator stops its runner):
// carried to the API, its phase, kube_namespace and kube_cr_uid replaced
// the new CR's, and the new CR's write-back put them back on its next
// event, over and over. A session that can have no CR (an invalid name or
// project) has no current one.
func (c *Controller) current(s *ambientv1.Session, cr *unstructured.Unstructured) bool {
	ns, err := spec.SessionNamespace(s.GetProjectId(), c.cfg.DefaultNamespace)
	if err != nil || ns != cr.GetNamespace() {
		return false
	}
	name, err := spec.CRName(s)
	return err == nil && name == cr.GetName()
}

// replaced logs that the status of CR k (of session id) is not carried to
// the API, and why.
func (c *Controller) replaced(ctx context.Context, id, k, why string) {
	c.cfg.Log.DebugContext(ctx, "status of a replaced agenticsession not written", slog.String(logkey.SessionID, id), slog.String(logkey.Name, k),
		slog.String(logkey.Reason, why))
}

// withoutRead returns the write of req (held on last: see held) that needs
// no fresh read of the session, when there is one: last (the newest state
// this replica has seen) holds no start or stop to pass to the operator
// (pending nil), and the write leaves the phase and the conditions alone
// (conditions are merged with the session's: see below). Every other status
// field comes from the CR, which is their source whatever the API holds
// now; only the phase can carry a user's start or stop that last does not
// show yet, and such a request reaches this controller later through the
// event path (Observe) with the newer session, which queues the CR again.
// A new CR's first write (kube_cr_uid and kube_namespace) is such a write:
// one API read fewer per session created. req must differ from last (sync
// checked it); dropping a phase equal to last's keeps that difference, so
// it is not compared again.
func withoutRead(req *ambientv1.UpdateSessionStatusRequest, pending *request, last *ambientv1.Session, cr *unstructured.Unstructured) (*ambientv1.UpdateSessionStatusRequest, bool) {
	if last == nil || pending != nil || withdrawsStart(session.PhaseOf(last), cr) {
		return nil, false
	}
	if req.Conditions != nil {
		// The list is written whole, merged with the other writers'
		// conditions (conditionsFor): merged with last's, it would drop
		// one written since.
		return nil, false
	}
	if req.Phase != nil {
		if req.GetPhase() != last.GetPhase() {
			return nil, false // a phase to write: only on the fresh session
		}
		req = proto.CloneOf(req)
		req.Phase = nil
	}
	return req, true
}

// write carries req to the API (ctx for logs and metrics, cctx for the
// call) and remembers the session it returns.
func (c *Controller) write(ctx, cctx context.Context, req *ambientv1.UpdateSessionStatusRequest, log *slog.Logger) error {
	updated, err := c.cfg.API.UpdateSessionStatus(cctx, req)
	switch grpcstatus.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return nil
	case codes.InvalidArgument:
		c.cfg.Metrics.StatusWrite(ctx, metrics.ResultInvalid)
		return fmt.Errorf("update session status %s (%s): %w: %w", req.GetId(), describe(req), errPermanent, err)
	default:
		c.cfg.Metrics.StatusWrite(ctx, metrics.ResultError)
		return fmt.Errorf("update session status %s: %w", req.GetId(), err)
	}
	c.cfg.Metrics.StatusWrite(ctx, metrics.ResultOK)
	c.remember(updated)
	c.requests.agree(req.GetId(), session.Phase(req.GetPhase()))
	log.DebugContext(ctx, "session status written", slog.String(logkey.Phase, req.GetPhase()))
	return nil
}

// held returns req without its phase while the API holds a start or stop
// the operator has not acted on (and that request): the CR's phase is the
// one from before the request, and writing it would undo it. The other
// status fields are still carried.
func (c *Controller) held(req *ambientv1.UpdateSessionStatusRequest, s *ambientv1.Session, cr *unstructured.Unstructured) (*ambientv1.UpdateSessionStatusRequest, *request) {
	pending := c.requests.pending(req.GetId(), session.PhaseOf(s), s.GetCompletionTime(), cr)
	if pending == nil || req.Phase == nil {
		return req, pending
	}
	out := proto.CloneOf(req)
	out.Phase = nil
	return out, pending
}

// followAssignment queues the CRs of every partition this replica gains,
// until ctx ends: their status may have changed while another replica (one
// that died before writing it) or none owned them, and no CR event will
// come again for that change.
func (c *Controller) followAssignment(ctx context.Context) {
	var (
		had           []int
		hadPartitions int
	)
	for {
		partitions, owned, changed := c.cfg.Assignment.State()
		var gained []int
		for _, p := range owned {
			// A new partition count maps sessions anew: all of it is gained.
			if partitions != hadPartitions || !slices.Contains(had, p) {
				gained = append(gained, p)
			}
		}
		if len(gained) > 0 {
			n := c.enqueueIn(partitions, gained)
			c.cfg.Log.DebugContext(ctx, "partitions gained, their status checked", slog.Any(logkey.Partitions, gained), slog.Int(logkey.Count, n))
		}
		had, hadPartitions = owned, partitions
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// enqueueIn queues the cached CRs whose session is in one of partitions
// (of n) and returns how many.
func (c *Controller) enqueueIn(n int, partitions []int) int {
	queued := 0
	for _, obj := range c.informer.GetIndexer().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		id := u.GetAnnotations()[spec.AnnotationSessionID]
		if id != "" && c.cfg.Owner.Owns(u.GetLabels()) && slices.Contains(partitions, group.PartitionOf(id, n)) {
			c.queue.Add(key(u))
			queued++
		}
	}
	return queued
}

// lastSeen returns the newest known state of session id: the remembered one
// or KV ambient-objects', whichever is newer.
func (c *Controller) lastSeen(ctx context.Context, id string) (*ambientv1.Session, error) {
	mem, _ := c.seen.Get(id)
	e, err := c.cfg.Objects.Get(ctx, events.ObjectKey(eventsv1.Resource_RESOURCE_SESSIONS, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return mem, nil
	}
	if err != nil {
		if mem != nil {
			return mem, nil // KV unavailable: the GetSession check still guards the write
		}
		return nil, fmt.Errorf("get session %s from kv: %w", id, err)
	}
	o := &eventsv1.Object{}
	if proto.Unmarshal(e.Value(), o) != nil || o.GetSession() == nil {
		return mem, nil
	}
	if newer(o.GetSession(), mem) {
		return o.GetSession(), nil
	}
	return mem, nil
}

// newer reports whether a is newer than b by updated_at (microseconds: the
// precision the API sends on watches), a nil b being oldest.
func newer(a, b *ambientv1.Session) bool {
	if b == nil {
		return true
	}
	return a.GetMetadata().GetUpdatedAt().AsTime().UnixMicro() >= b.GetMetadata().GetUpdatedAt().AsTime().UnixMicro()
}

func (c *Controller) remember(s *ambientv1.Session) {
	if s == nil || s.GetMetadata().GetId() == "" {
		return
	}
	id := s.GetMetadata().GetId()
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, _ := c.seen.Peek(id); newer(s, cur) {
		c.seen.Add(id, trim(s))
	}
}

// trim keeps what newer, current and Differs read: the id, updated_at, the
// project and CR name, and the status fields. The rest (prompt, repos,
// labels...) can be large and is never compared here.
func trim(s *ambientv1.Session) *ambientv1.Session {
	return &ambientv1.Session{
		Metadata:           &ambientv1.ObjectReference{Id: s.GetMetadata().GetId(), UpdatedAt: s.GetMetadata().GetUpdatedAt()},
		ProjectId:          s.ProjectId,
		KubeCrName:         s.KubeCrName,
		Phase:              s.Phase,
		StartTime:          s.GetStartTime(),
		CompletionTime:     s.GetCompletionTime(),
		SdkSessionId:       s.SdkSessionId,
		SdkRestartCount:    s.SdkRestartCount,
		Conditions:         s.Conditions,
		ReconciledRepos:    s.ReconciledRepos,
		ReconciledWorkflow: s.ReconciledWorkflow,
		KubeCrUid:          s.KubeCrUid,
		KubeNamespace:      s.KubeNamespace,
	}
}

// CachedSessions is how many sessions are remembered (at most CacheSize).
func (c *Controller) CachedSessions() int { return c.seen.Len() }

// Observe records s as seen by the event path and queues its CR (when cr is
// set) so a status difference is written even if the CR itself did not change.
func (c *Controller) Observe(s *ambientv1.Session, cr types.NamespacedName) {
	c.remember(s)
	if cr.Name != "" {
		c.queue.Add(cr.String())
	}
}

// Forget drops what is known of a deleted session.
func (c *Controller) Forget(id string) {
	c.seen.Remove(id)
	c.requests.forget(id)
}

// CachedCR returns the informer's copy of the AgenticSession cr (shared:
// read it, never modify it); false when it is not cached.
func (c *Controller) CachedCR(cr types.NamespacedName) (*unstructured.Unstructured, bool) {
	obj, exists, err := c.informer.GetIndexer().GetByKey(cr.String())
	if err != nil || !exists {
		return nil, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	return u, ok
}

// Sessions returns, for every session with a cached AgenticSession of this
// installation (Config.Owner), when its newest CR was created (for the
// resync's orphan check). Empty before the cache synced.
func (c *Controller) Sessions() map[string]time.Time {
	out := map[string]time.Time{}
	for _, obj := range c.informer.GetIndexer().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		id := u.GetAnnotations()[spec.AnnotationSessionID]
		if id == "" || !c.cfg.Owner.Owns(u.GetLabels()) {
			continue
		}
		if at := u.GetCreationTimestamp().Time; at.After(out[id]) {
			out[id] = at
		}
	}
	return out
}

// CRsOf returns the AgenticSessions in the informer's cache that belong to
// session id (empty before the cache synced).
func (c *Controller) CRsOf(id string) []types.NamespacedName {
	objs, err := c.informer.GetIndexer().ByIndex(sessionIndex, id)
	if err != nil {
		return nil
	}
	out := make([]types.NamespacedName, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()})
		}
	}
	return out
}
