// Package app wires the informer: telemetry, NATS, the API client, the
// leader lease, one generic resource runner per resource, and the HTTP
// server for health and metrics.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/telemetry"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
	"github.com/ambient-code/control-plane/services/informer/internal/lease"
	"github.com/ambient-code/control-plane/services/informer/internal/publish"
	"github.com/ambient-code/control-plane/services/informer/internal/watch"
)

// ServiceName names the informer in telemetry.
const ServiceName = "informer"

// Shutdown budgets.
const (
	telemetryFlushTimeout = 5 * time.Second
	setupRetryMax         = 5 * time.Second
)

// Run runs the informer until ctx ends (nil) or something fatal happens.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) (err error) {
	o := options{version: "dev"}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return err
		}
	}
	log = log.With(slog.String(logkey.Instance, cfg.InstanceID))

	prov, shutdownTelemetry, err := telemetry.Setup(ctx, telemetry.Options{
		ServiceName: ServiceName, Version: o.version, OTLPEndpoint: cfg.OTLPEndpoint, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), telemetryFlushTimeout)
		defer cancel()
		err = errors.Join(err, shutdownTelemetry(fctx))
	}()

	nc, err := bus.Connect(ctx, cfg.NATS, log)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer func() {
		// Drain flushes what is buffered; the informer has no subscriptions
		// worth finishing, so a failed drain only matters for the log.
		if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
			log.Warn("nats drain failed", slog.Any(logkey.Err, derr))
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	objects, leases, err := ensureNATS(ctx, js, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // shut down while setting up
		}
		return err
	}

	api, err := apiclient.New(cfg.API.Config())
	if err != nil {
		return fmt.Errorf("api client: %w", err)
	}
	defer func() {
		if cerr := api.Close(); cerr != nil {
			log.Warn("close api client", slog.Any(logkey.Err, cerr))
		}
	}()

	elector, err := lease.New(leases, lease.Config{Key: cfg.LeaseKey, Holder: cfg.InstanceID, TTL: cfg.LeaseTTL}, log)
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}

	var runners []leader
	m, err := newMetrics(prov.Meter, gauges{
		cacheObjects: func(r eventsv1.Resource) int { return find(runners, r).cacheSize() },
		queueDepth:   func(r eventsv1.Resource) int { return find(runners, r).queueDepth() },
		leader:       elector.IsLeader,
		terms:        elector.Terms,
	})
	if err != nil {
		return err
	}
	// The post-ack KV write outlives a lost lease by at most TTL/3: the next
	// leader cannot start before the lease expires, TTL after the last renewal.
	pcfg := publish.Config{Prefix: cfg.SubjectPrefix, Stream: cfg.Stream, Observe: m.observePublish, StoreTimeout: cfg.LeaseTTL / 3}
	if hook := o.afterPublish; hook != nil {
		pcfg.AfterPublish = func(ctx context.Context, ev *eventsv1.ResourceEvent) error {
			if err := hook(ctx, ev); err != nil {
				return fatalError{err}
			}
			return nil
		}
	}
	pub, err := publish.New(js, objects, prov.Tracer, pcfg)
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	wcfg := watch.Config{
		BackoffInitial: cfg.BackoffInitial, BackoffMax: cfg.BackoffMax,
		Resync: cfg.ResyncPeriod, HealthyAfter: o.healthyAfter,
	}
	runners = []leader{
		newResource(watch.Sessions(api), pub, objects, cfg.Workers, wcfg, m, log),
		newResource(watch.Projects(api), pub, objects, cfg.Workers, wcfg, m, log),
		newResource(watch.ProjectSettings(api), pub, objects, cfg.Workers, wcfg, m, log),
	}

	hs, err := health.New(health.Options{Addr: cfg.MetricsAddr, Registry: prov.Registry, Logger: log, Checks: map[string]health.Check{
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return fmt.Errorf("nats %s", nc.Status())
			}
			return nil
		},
		"api": func(ctx context.Context) error {
			// One item of one page: cheap, and proves address, TLS and token.
			_, err := api.Projects().ListProjects(ctx, &ambientv1.ListProjectsRequest{Page: 1, Size: 1})
			return err
		},
		"lease": func(context.Context) error {
			if !elector.IsLeader() {
				return nil // a standby is ready: it is what it should be
			}
			for _, r := range runners {
				if !r.connected() {
					return fmt.Errorf("leader: %s watch not synced", events.ResourceToken(r.resource()))
				}
			}
			return nil
		},
	}})
	if err != nil {
		return fmt.Errorf("health server: %w", err)
	}
	ln, err := hs.Listen(ctx)
	if err != nil {
		return err
	}
	if o.ready != nil {
		o.ready(ln.Addr().String())
	}

	log.Info("informer starting", slog.String("stream", cfg.Stream), slog.String("subject_prefix", cfg.SubjectPrefix),
		slog.String("objects_bucket", cfg.ObjectsBucket), slog.String("lease_key", cfg.LeaseKey), slog.Bool("shadow", cfg.Shadow()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Serve(gctx, ln) })
	g.Go(func() error {
		err := elector.Run(gctx, func(lctx context.Context) error { return lead(lctx, runners) })
		if err != nil {
			return fmt.Errorf("leader: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// lead runs every resource while the lease is held.
func lead(ctx context.Context, runners []leader) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range runners {
		g.Go(func() error { return r.lead(gctx) })
	}
	return g.Wait()
}

func find(runners []leader, r eventsv1.Resource) leader {
	for _, x := range runners {
		if x.resource() == r {
			return x
		}
	}
	return idle{}
}

// idle stands in for a resource before the runners exist.
type idle struct{}

func (idle) resource() eventsv1.Resource { return eventsv1.Resource_RESOURCE_UNSPECIFIED }
func (idle) lead(context.Context) error  { return nil }
func (idle) connected() bool             { return false }
func (idle) cacheSize() int              { return 0 }
func (idle) queueDepth() int             { return 0 }

// ensureNATS creates or updates the stream and buckets, retrying while
// JetStream is not reachable yet (a NATS cluster still electing).
func ensureNATS(ctx context.Context, js jetstream.JetStream, cfg config.Config, log *slog.Logger) (objects, leases jetstream.KeyValue, err error) {
	b := watch.Backoff{Initial: 100 * time.Millisecond, Max: setupRetryMax, Jitter: 0.25}
	for {
		objects, leases, err = tryEnsureNATS(ctx, js, cfg)
		if err == nil {
			return objects, leases, nil
		}
		log.Warn("jetstream setup failed, retrying", slog.Any(logkey.Err, err))
		t := time.NewTimer(b.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("jetstream setup: %w", errors.Join(ctx.Err(), err))
		case <-t.C:
		}
	}
}

func tryEnsureNATS(ctx context.Context, js jetstream.JetStream, cfg config.Config) (objects, leases jetstream.KeyValue, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := bus.EnsureStream(ctx, js, bus.EventsStream(cfg.Stream, cfg.SubjectPrefix, cfg.StreamReplicas, cfg.StreamMaxAge)); err != nil {
		return nil, nil, err
	}
	oc := bus.ObjectsBucket(cfg.StreamReplicas)
	oc.Bucket = cfg.ObjectsBucket
	if objects, err = bus.EnsureKV(ctx, js, oc); err != nil {
		return nil, nil, err
	}
	if leases, err = bus.EnsureKV(ctx, js, bus.LeasesBucket(cfg.StreamReplicas, cfg.LeaseTTL)); err != nil {
		return nil, nil, err
	}
	return objects, leases, nil
}
