// Package app declares event-tally's parts on the service runtime: the
// consumer group member that feeds the tally, /tally on the health server,
// and the tally's metrics.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/tally"
	"github.com/ambient-code/control-plane/services/event-tally/internal/config"
)

// ServiceName names event-tally in telemetry.
const ServiceName = "event-tally"

// PathTally serves the tally as JSON.
const PathTally = "/tally"

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

// Run tallies events until ctx ends (nil) or the group config turns out
// invalid.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Option) error {
	o := options{version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
	sopts := service.Options{Name: ServiceName, Version: o.version, Config: cfg.Config, Logger: log}
	if o.listening != nil {
		sopts.Listening = func(a net.Addr) { o.listening(a.String()) }
	}
	return service.Run(ctx, sopts, func(_ context.Context, rt *service.Runtime) error {
		t := tally.New()
		if err := registerMetrics(rt.Telemetry().Meter, t); err != nil {
			return err
		}
		rt.Router().Method(http.MethodGet, PathTally, t)
		rt.Consume(cfg.Group, t.Handle)
		log.Info("event-tally starting", slog.String(logkey.Stream, cfg.Group.Stream), slog.String(logkey.Group, cfg.Group.Group), slog.String(logkey.Member, cfg.Group.Member))
		return nil
	})
}

// registerMetrics exposes the tally as observable instruments. What the
// consumer group did (retries, dead letters) is group.Run's own metrics.
func registerMetrics(m metric.Meter, t *tally.Tally) error {
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
		return nil
	}, evs, ids, last, redel)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}
