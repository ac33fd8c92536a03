// Package app declares the kube-reconciler's parts on the service runtime
// (libs/service): KV ambient-objects, the ambient API client, the
// Kubernetes clients, the AgenticSession CRD watcher, the event reconciler
// fed by the consumer group, the status write-back and the periodic resync.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/resync"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/spec"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/status"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ServiceName is the telemetry service name and the NATS client name prefix.
const ServiceName = "kube-reconciler"

type options struct {
	version    string
	restConfig *rest.Config
	listening  func(addr net.Addr)
	stats      *group.Stats
	connected  func(nc *nats.Conn)
}

// Option changes how Run wires the service (tests and main).
type Option func(*options)

// WithVersion sets the build version reported in telemetry.
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// WithRESTConfig uses cfg for Kubernetes instead of KUBECONFIG/in-cluster.
func WithRESTConfig(cfg *rest.Config) Option { return func(o *options) { o.restConfig = cfg } }

// WithListening is called with the health server's address once it listens.
func WithListening(fn func(addr net.Addr)) Option { return func(o *options) { o.listening = fn } }

// WithConnected is called with the NATS connection once it is up; tests use
// it to cut the connection the way a crashed process would.
func WithConnected(fn func(nc *nats.Conn)) Option { return func(o *options) { o.connected = fn } }

// WithStats counts the consumer group's deliveries into s.
func WithStats(s *group.Stats) Option { return func(o *options) { o.stats = s } }

// Run runs the service until ctx is done, then shuts down gracefully: the
// group stops taking events and finishes those in flight, the status
// workers and the resync stop, NATS drains and telemetry flushes.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) error {
	o := options{version: "dev", stats: &group.Stats{}}
	for _, opt := range opts {
		opt(&o)
	}
	sopts := service.Options{Name: ServiceName, Version: o.version, Config: cfg.Config, Logger: log, Connected: o.connected, Listening: o.listening}
	return service.Run(ctx, sopts, func(ctx context.Context, rt *service.Runtime) error {
		meter := rt.Telemetry().Meter
		m, err := metrics.New(meter)
		if err != nil {
			return err
		}
		kc, err := newKubeClients(cfg, o)
		if err != nil {
			return err
		}
		crdWatcher, err := crd.NewWatcher(kc.apiext, log.With(slog.String(logkey.Service, "crd")))
		if err != nil {
			return err
		}
		acfg := cfg.API.Config()
		acfg.Logger = log // hears of a token file that turned unusable
		api, err := apiclient.New(acfg)
		if err != nil {
			return fmt.Errorf("api client: %w", err)
		}
		rt.Cleanup(api.Close)
		objects, err := objectsBucket(ctx, rt.JetStream(), cfg.ObjectsBucket)
		if err != nil {
			return err
		}
		w, err := newWorkers(cfg, o, kc, crdWatcher, api, objects, m, log)
		if err != nil {
			return err
		}
		if err := metrics.RegisterMemoryGauges(meter, w.status.CachedSessions, w.rec.HandledCount); err != nil {
			return err
		}
		rt.Check("api", api.Check)
		rt.Check("kubernetes", kc.check(w.status))
		// Not ready while AgenticSessions cannot be applied: the CRD is
		// missing, not established or without a usable schema.
		rt.Check("crd", crdWatcher.Check)
		rt.Go("crd watcher", crdWatcher.Run)
		rt.Go("status write-back", w.status.Run)
		rt.Go("resync", w.resync.Run)
		rt.Consume(w.group, w.rec.Handle)
		log.InfoContext(ctx, "kube-reconciler starting", slog.String(logkey.Group, w.group.Group), slog.String(logkey.Member, w.group.Member),
			slog.String("session_selector", cfg.SessionSelector.String()))
		return nil
	})
}

// workers are the parts that do the work: the event reconciler and the
// consumer-group config feeding it, the status write-back, the resync.
type workers struct {
	group  group.Config
	rec    *reconcile.Reconciler
	status *status.Controller
	resync *resync.Resyncer
}

// newWorkers builds the workers on the service's clients.
func newWorkers(cfg config.Config, o options, kc kubeClients, crdWatcher *crd.Watcher, api *apiclient.Client, objects jetstream.KeyValue,
	m *metrics.Metrics, log *slog.Logger,
) (workers, error) {
	// The consumer's partitions: the resync and the status write-back of a
	// session are done by the replica that handles its events.
	assignment := &group.Assignment{}
	statusCtl, err := status.New(status.Config{Dynamic: kc.dyn, API: api, Objects: objects, Metrics: m, Log: log.With(slog.String(logkey.Service, "status")),
		Workers: cfg.StatusWorkers, Resync: cfg.StatusResync, CacheSize: cfg.StatusCacheSize, Owner: owner(cfg), DefaultNamespace: cfg.Namespace, Assignment: assignment})
	if err != nil {
		return workers{}, err
	}
	rec, err := reconcile.New(reconcile.Config{
		Objects: objects, Applier: apply.New(kc.kube, kc.dyn, crdWatcher), API: api, Source: api, Tracker: statusCtl,
		Selector: cfg.SessionSelector, RoleAllowList: cfg.RoleAllowList, DefaultNamespace: cfg.Namespace,
		NamespaceDenyList: spec.DenyList(cfg.NamespaceDenyList), HandledFor: resync.Grace(cfg.ResyncInterval), Owner: owner(cfg),
		Partitions: assignment, Metrics: m, Log: log,
	})
	if err != nil {
		return workers{}, err
	}
	// Handle is level-triggered (it reconciles the newest state, from the
	// event or KV), so an object's events that queued behind its running
	// handler are handled by one call (issue 15). The resync reconciles
	// every object of the member's partitions again, so failed work may
	// leave the stream when lanes in backoff fill the consumer's window
	// (ParkFailures): one tenant's failing sessions (its namespace's
	// webhook down) do not hold other tenants' back.
	gcfg := cfg.Group
	gcfg.Stats, gcfg.Assignment, gcfg.Coalesce, gcfg.ParkFailures = o.stats, assignment, true, true
	// A replica cut off from the API alone cannot carry the statuses of
	// its partitions' sessions there: while its client cannot connect, the
	// group gives them to a replica that can, whose status write-back
	// takes them over (status.Controller follows the Assignment).
	gcfg.Ready = api.Reachable
	gcfg.OnDeadLetter = rec.ReportDeadLetter
	rs, err := resync.New(resync.Config{Objects: objects, Reconciler: rec, CRs: statusCtl, Kube: kc.kube, Assignment: gcfg.Assignment,
		Owner: owner(cfg), Interval: cfg.ResyncInterval, Metrics: m, Log: log.With(slog.String(logkey.Service, "resync"))})
	if err != nil {
		return workers{}, err
	}
	return workers{group: gcfg, rec: rec, status: statusCtl, resync: rs}, nil
}

// kubeClients are the service's Kubernetes clients, all with one identity
// and rate limit.
type kubeClients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	apiext apiextclient.Interface
}

// newKubeClients builds the clients from o's REST config or else
// KUBECONFIG/in-cluster, with KUBE_QPS/KUBE_BURST.
func newKubeClients(cfg config.Config, o options) (kubeClients, error) {
	restCfg := o.restConfig
	if restCfg == nil {
		var err error
		if restCfg, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
			return kubeClients{}, fmt.Errorf("kubernetes config: %w", err)
		}
	}
	restCfg = rest.CopyConfig(restCfg)
	restCfg.QPS, restCfg.Burst = float32(cfg.KubeQPS), cfg.KubeBurst
	restCfg.UserAgent = ServiceName + "/" + o.version
	var kc kubeClients
	var err error
	if kc.kube, err = kubernetes.NewForConfig(restCfg); err != nil {
		return kubeClients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	if kc.dyn, err = dynamic.NewForConfig(restCfg); err != nil {
		return kubeClients{}, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	if kc.apiext, err = apiextclient.NewForConfig(restCfg); err != nil {
		return kubeClients{}, fmt.Errorf("kubernetes apiextensions client: %w", err)
	}
	return kc, nil
}

// check is the "kubernetes" readiness check: the API server answers
// /readyz and the AgenticSession informer has synced.
func (kc kubeClients) check(st *status.Controller) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := kc.kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
			return fmt.Errorf("kubernetes: %w", err)
		}
		if !st.HasSynced() {
			return errors.New("agenticsession cache not synced")
		}
		return nil
	}
}

// objectsBucket opens KV ambient-objects, creating it (with the informer's
// settings, per-message TTLs allowed: bus.ObjectsBucket) when the informer
// has not yet.
func objectsBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	bcfg := bus.ObjectsBucket(1)
	bcfg.Bucket = name
	return bus.OpenKV(ctx, js, bcfg)
}

// owner is the installation whose objects the resync and the status
// write-back treat as ours.
func owner(cfg config.Config) spec.Owner {
	return spec.Owner{Instance: cfg.Instance, AdoptUnlabeled: cfg.AdoptUnlabeled}
}
