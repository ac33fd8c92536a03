// Package app wires the kube-reconciler: NATS (consumer group and KV
// ambient-objects), the ambient API client, Kubernetes clients, the
// AgenticSession CRD watcher, the event reconciler, the status write-back and
// the health/metrics server.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/apply"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/config"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/crd"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/metrics"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile"
	"github.com/ambient-code/control-plane/services/kube-reconciler/internal/status"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ServiceName is the telemetry service name and the NATS client name prefix.
const ServiceName = "kube-reconciler"

// shutdownGrace bounds draining NATS and flushing telemetry after ctx ends.
const shutdownGrace = 10 * time.Second

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
// group stops taking events and finishes the one in flight, the status workers
// stop, NATS drains and telemetry flushes.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) (err error) {
	o := options{version: "dev", stats: &group.Stats{}}
	for _, opt := range opts {
		opt(&o)
	}
	prov, shutdownTel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: ServiceName, Version: o.version, Export: cfg.Telemetry, Logger: log})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		err = errors.Join(err, shutdownTel(sctx))
	}()
	m, err := metrics.New(prov.Registry)
	if err != nil {
		return err
	}
	if err := registerGroupStats(prov.Registry, o.stats); err != nil {
		return err
	}

	restCfg := o.restConfig
	if restCfg == nil {
		if restCfg, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
			return fmt.Errorf("kubernetes config: %w", err)
		}
	}
	restCfg = rest.CopyConfig(restCfg)
	restCfg.QPS, restCfg.Burst = float32(cfg.KubeQPS), cfg.KubeBurst
	restCfg.UserAgent = ServiceName + "/" + o.version
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	apiext, err := apiextclient.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes apiextensions client: %w", err)
	}
	crdWatcher, err := crd.NewWatcher(apiext, log.With(slog.String(logkey.Service, "crd")))
	if err != nil {
		return err
	}

	api, err := apiclient.New(cfg.API.Config())
	if err != nil {
		return fmt.Errorf("api client: %w", err)
	}
	defer func() {
		if cerr := api.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close api client: %w", cerr))
		}
	}()

	nc, err := bus.Connect(ctx, cfg.NATS, log)
	if err != nil {
		return err
	}
	defer func() {
		// Drain finishes in-flight deliveries and acks before closing.
		if derr := nc.Drain(); derr != nil {
			err = errors.Join(err, fmt.Errorf("drain nats: %w", derr))
		}
	}()
	if o.connected != nil {
		o.connected(nc)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	objects, err := objectsBucket(ctx, js, cfg.ObjectsBucket)
	if err != nil {
		return err
	}

	statusCtl, err := status.New(status.Config{Dynamic: dyn, API: api, Objects: objects, Metrics: m, Log: log.With(slog.String(logkey.Service, "status")), Workers: cfg.StatusWorkers, Resync: cfg.StatusResync})
	if err != nil {
		return err
	}
	rec, err := reconcile.New(reconcile.Config{
		Objects: objects, Applier: apply.New(kube, dyn, crdWatcher), API: api, Tracker: statusCtl,
		Selector: cfg.SessionSelector, RoleAllowList: cfg.RoleAllowList, DefaultNamespace: cfg.Namespace,
		Metrics: m, Log: log,
	})
	if err != nil {
		return err
	}

	hs, err := health.New(health.Options{Addr: cfg.MetricsAddr, Registry: prov.Registry, Logger: log, Checks: map[string]health.Check{
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return fmt.Errorf("nats: %s", nc.Status())
			}
			return nil
		},
		"api": api.Check,
		"kubernetes": func(ctx context.Context) error {
			if err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
				return fmt.Errorf("kubernetes: %w", err)
			}
			if !statusCtl.HasSynced() {
				return errors.New("agenticsession cache not synced")
			}
			return nil
		},
		// Not ready while AgenticSessions cannot be applied: the CRD is
		// missing, not established or without a usable schema.
		"crd": crdWatcher.Check,
	}})
	if err != nil {
		return err
	}
	ln, err := hs.Listen(ctx)
	if err != nil {
		return err
	}
	if o.listening != nil {
		o.listening(ln.Addr())
	}

	gcfg := group.Config{
		Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Group: cfg.Group, Member: cfg.MemberID,
		Partitions: cfg.Partitions, MemberPartitions: cfg.MemberPartitions, MaxDeliver: cfg.MaxDeliver, Stats: o.stats,
		Meter: prov.Meter, TracerProvider: prov.TracerProvider,
	}
	log.InfoContext(ctx, "kube-reconciler starting", slog.String(logkey.Group, cfg.Group), slog.String(logkey.Member, cfg.MemberID),
		slog.String("session_selector", cfg.SessionSelector.String()), slog.String(logkey.Addr, ln.Addr().String()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Serve(gctx, ln) })
	g.Go(func() error { return crdWatcher.Run(gctx) })
	g.Go(func() error { return statusCtl.Run(gctx) })
	g.Go(func() error { return group.Run(gctx, js, gcfg, rec.Handle, log) })
	return g.Wait()
}

// objectsBucket opens KV ambient-objects, creating it (with the informer's
// settings) when the informer has not yet.
func objectsBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		bcfg := bus.ObjectsBucket(1)
		bcfg.Bucket = name
		kv, err = js.CreateKeyValue(ctx, bcfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", name, err)
	}
	return kv, nil
}

// registerGroupStats exports the consumer group's retry and dead-letter counts.
func registerGroupStats(reg *prometheus.Registry, s *group.Stats) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambient_kube_reconciler_event_retries_total", Help: "Events nacked for a retry with backoff."},
			func() float64 { return float64(s.Snapshot().Retried) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambient_kube_reconciler_dead_letters_total", Help: "Events sent to the dead-letter subject."},
			func() float64 { return float64(s.Snapshot().DeadLettered) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ambient_kube_reconciler_events_delivered_total", Help: "Event deliveries, retries included."},
			func() float64 { return float64(s.Snapshot().Delivered) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register group metric: %w", err)
		}
	}
	return nil
}
