// Package app wires event-tally: telemetry, NATS, the consumer group that
// feeds the tally, and the HTTP server (/tally, /healthz, /readyz, /metrics).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/health"
	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/telemetry"
	"github.com/ambient-code/control-plane/services/event-tally/internal/config"
	"github.com/ambient-code/control-plane/libs/tally"
)

// ServiceName names event-tally in telemetry.
const ServiceName = "event-tally"

// PathTally serves the tally as JSON.
const PathTally = "/tally"

const telemetryFlushTimeout = 5 * time.Second

// Option adjusts Run (tests, build stamping).
type Option func(*options)

type options struct {
	version   string
	listening func(addr string)
}

// WithVersion sets the build version reported in telemetry.
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// WithListening calls fn with the HTTP address once it listens.
func WithListening(fn func(addr string)) Option { return func(o *options) { o.listening = fn } }

// Run tallies events until ctx ends (nil) or the group stops on its own.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) (err error) {
	o := options{version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
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
		if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
			log.Warn("nats drain failed", slog.Any(logkey.Err, derr))
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	t := tally.New()
	stats := &group.Stats{}
	if err := registerMetrics(prov.Meter, t, stats); err != nil {
		return err
	}
	hs, err := health.New(health.Options{Addr: cfg.MetricsAddr, Registry: prov.Registry, Logger: log, Checks: map[string]health.Check{
		"nats": func(context.Context) error {
			if !nc.IsConnected() {
				return fmt.Errorf("nats %s", nc.Status())
			}
			return nil
		},
		"stream": func(ctx context.Context) error {
			_, err := js.Stream(ctx, cfg.Stream)
			return err
		},
	}})
	if err != nil {
		return fmt.Errorf("health server: %w", err)
	}
	hs.Router().Method(http.MethodGet, PathTally, t)
	ln, err := hs.Listen(ctx)
	if err != nil {
		return err
	}
	if o.listening != nil {
		o.listening(ln.Addr().String())
	}

	gcfg := group.Config{
		Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Group: cfg.Group, Member: cfg.MemberID,
		Partitions: cfg.Partitions, MemberPartitions: cfg.MemberPartitions, Stats: stats,
	}
	log.Info("event-tally starting", slog.String(logkey.Stream, cfg.Stream), slog.String(logkey.Group, cfg.Group), slog.String(logkey.Member, cfg.MemberID))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Serve(gctx, ln) })
	g.Go(func() error { return runGroup(gctx, js, gcfg, t, log) })
	return g.Wait()
}

// runGroup joins the group, retrying while the stream does not exist yet
// (event-tally may start before the informer created it).
func runGroup(ctx context.Context, js jetstream.JetStream, cfg group.Config, t *tally.Tally, log *slog.Logger) error {
	delay := 250 * time.Millisecond
	for {
		err := group.Run(ctx, js, cfg, t.Handle, log)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, group.ErrInvalidConfig) {
			return fmt.Errorf("consumer group: %w", err)
		}
		log.Warn("consumer group stopped, rejoining", slog.Any(logkey.Err, err), slog.Duration(logkey.Duration, delay))
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// registerMetrics exposes the tally as observable instruments.
func registerMetrics(m metric.Meter, t *tally.Tally, stats *group.Stats) error {
	evs, err := m.Int64ObservableCounter("event_tally.events", metric.WithDescription("Distinct events counted, by resource and type."))
	if err != nil {
		return fmt.Errorf("create instrument: %w", err)
	}
	ids, err := m.Int64ObservableGauge("event_tally.ids", metric.WithDescription("Distinct object ids seen, by resource."))
	if err != nil {
		return fmt.Errorf("create instrument: %w", err)
	}
	last, err := m.Float64ObservableGauge("event_tally.last_event_timestamp", metric.WithUnit("s"), metric.WithDescription("Unix time of the last counted event, by resource."))
	if err != nil {
		return fmt.Errorf("create instrument: %w", err)
	}
	redel, err := m.Int64ObservableCounter("event_tally.redeliveries", metric.WithDescription("Deliveries of events already counted."))
	if err != nil {
		return fmt.Errorf("create instrument: %w", err)
	}
	dead, err := m.Int64ObservableCounter("event_tally.dead_lettered", metric.WithDescription("Undecodable events sent to the DLQ."))
	if err != nil {
		return fmt.Errorf("create instrument: %w", err)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := t.Snapshot(false)
		for res, c := range s.Resources {
			r := attribute.String("resource", res)
			o.ObserveInt64(evs, int64(c.Added), metric.WithAttributes(r, attribute.String("type", "ADDED")))
			o.ObserveInt64(evs, int64(c.Modified), metric.WithAttributes(r, attribute.String("type", "MODIFIED")))
			o.ObserveInt64(evs, int64(c.Deleted), metric.WithAttributes(r, attribute.String("type", "DELETED")))
			o.ObserveInt64(ids, int64(c.IDs), metric.WithAttributes(r))
			if !c.LastEvent.IsZero() {
				o.ObserveFloat64(last, float64(c.LastEvent.UnixNano())/1e9, metric.WithAttributes(r))
			}
		}
		o.ObserveInt64(redel, int64(s.Redeliveries))
		o.ObserveInt64(dead, int64(stats.Snapshot().DeadLettered))
		return nil
	}, evs, ids, last, redel, dead)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}
