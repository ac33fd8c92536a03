package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// Options configures [Setup].
type Options struct {
	// ServiceName is the OTel service.name and the name of the returned
	// Tracer and Meter. Required.
	ServiceName string
	// Version is the OTel service.version (the build version).
	Version string
	// Export says which signals leave the process (see [LoadEnv]); the
	// exporters are built by the OTel SDK's autoexport from the standard
	// OTEL_* environment. The zero value exports nothing: spans are still
	// recorded, so trace context propagates, and /metrics still serves
	// every metric. Export.Disabled also stops recording spans.
	Export Export
	// Logger, when set, receives OpenTelemetry's internal errors (failed
	// exports) at warn level instead of OTel's default stderr logger. This
	// sets the process-wide OTel error handler.
	Logger *slog.Logger
}

// Providers are the telemetry handles a service passes to its components.
// All are safe for concurrent use.
type Providers struct {
	// TracerProvider is an SDK tracer provider (a no-op one when
	// Export.Disabled); it is also installed as the OTel global so
	// instrumentation libraries find it.
	TracerProvider trace.TracerProvider
	// MeterProvider is an SDK meter provider read by the Prometheus exporter
	// (and pushed over OTLP when Options.Export.Metrics).
	MeterProvider metric.MeterProvider
	// Registry holds the OTel metrics plus the Go runtime and process
	// collectors; serve it on /metrics (see package health).
	Registry *prometheus.Registry
	// Tracer and Meter are named after Options.ServiceName.
	Tracer trace.Tracer
	Meter  metric.Meter
}

// Setup builds the tracer and meter providers described in the package doc
// and returns them with a shutdown func that flushes and stops them. Their
// resource is service.name and service.version from opts, overridden by
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (see newResource); the
// SDK reads the sampler from OTEL_TRACES_SAMPLER and _ARG. Call
// shutdown once when the service stops, with a ctx bounding the flush; it
// runs each cleanup once (later calls return nil) and joins their errors. On
// error Setup undoes what it had built and returns a nil shutdown.
//
// Setup sets two OTel globals, the only ones this project allows:
//   - the TextMapPropagator (W3C TraceContext + Baggage), because the events
//     codec injects and extracts trace context through
//     otel.GetTextMapPropagator so every service agrees on the header format
//     without passing a propagator through every layer;
//   - the TracerProvider, because instrumentation libraries (gRPC, HTTP)
//     default to the global one.
//
// The meter provider is not global: metrics are registered through
// Providers.Meter so each service's /metrics shows only its own registry.
// Errors wrap [ErrInvalidOptions] for bad options or an OTEL_* environment
// the SDK refuses (an exporter or protocol it does not know, an
// OTEL_RESOURCE_ATTRIBUTES entry without a value).
func Setup(ctx context.Context, opts Options) (Providers, func(context.Context) error, error) {
	if opts.ServiceName == "" {
		return Providers{}, nil, fmt.Errorf("telemetry setup: service name is empty: %w", ErrInvalidOptions)
	}
	var cleanups []func(context.Context) error
	shutdown := onceShutdown(&cleanups)
	fail := func(err error) (Providers, func(context.Context) error, error) {
		return Providers{}, nil, errors.Join(err, shutdown(ctx))
	}

	res, err := newResource(ctx, opts)
	if err != nil {
		return fail(err)
	}

	var tp trace.TracerProvider
	tpShutdown := func(context.Context) error { return nil }
	if opts.Export.Disabled {
		// Not the SDK's provider without a processor: that one still
		// records every span, which is what disabling the SDK turns off.
		tp = noop.NewTracerProvider()
	} else if tp, tpShutdown, err = newTracerProvider(ctx, res, opts.Export.Traces, opts.Export.tracesHeaders); err != nil {
		return fail(fmt.Errorf("trace exporter: %w: %w", ErrInvalidOptions, err))
	}
	cleanups = append(cleanups, tpShutdown)

	mp, reg, err := newMeterProvider(ctx, res, opts.Export.Metrics && !opts.Export.Disabled, opts.Export.metricsHeaders)
	if err != nil {
		return fail(err)
	}
	// This replaces the tracer's cleanup: the two providers flush at the
	// same time, each within the whole of the shutdown's ctx. One after
	// the other, a collector that is down would make the first use up the
	// time the second needed.
	cleanups[len(cleanups)-1] = func(ctx context.Context) error {
		var tpErr error
		var wg sync.WaitGroup
		wg.Go(func() { tpErr = tpShutdown(ctx) }) // awaited below
		mpErr := mp.Shutdown(ctx)
		wg.Wait()
		if mpErr != nil {
			mpErr = fmt.Errorf("shutdown meter provider: %w", mpErr)
		}
		return errors.Join(tpErr, mpErr)
	}

	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetTracerProvider(tp)
	if opts.Logger != nil {
		log := opts.Logger
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("opentelemetry error", slog.Any(logkey.Err, err))
		}))
	}

	return Providers{
		TracerProvider: tp,
		MeterProvider:  mp,
		Registry:       reg,
		Tracer:         tp.Tracer(opts.ServiceName),
		Meter:          mp.Meter(opts.ServiceName),
	}, shutdown, nil
}

// newTracerProvider returns an SDK tracer provider that adds the ctx
// attributes (ContextWithAttributes) to every span and, when export is set,
// batches spans to the exporter autoexport builds from the environment
// (with the headers of h's file, see newSpanExporter), with its shutdown
// func. Without an exporter it has no span processor, so ending a span
// costs no snapshot.
func newTracerProvider(ctx context.Context, res *resource.Resource, export bool, h fileHeaders) (trace.TracerProvider, func(context.Context) error, error) {
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	aborted := make(chan struct{})
	abort := sync.OnceFunc(func() { close(aborted) })
	if export {
		// The OTLP exporters dial lazily, so this does not block on the
		// collector.
		exp, err := newSpanExporter(ctx, h)
		if err != nil {
			return nil, nil, fmt.Errorf("new exporter: %w", err)
		}
		if !autoexport.IsNoneSpanExporter(exp) {
			tpOpts = append(tpOpts, sdktrace.WithBatcher(abortableExporter{SpanExporter: exp, abort: aborted}))
		}
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)
	return WithContextAttributes(tp), func(ctx context.Context) error {
		// The provider shuts nothing down when ctx has already ended, and
		// the batch processor stops waiting at ctx's end while its
		// goroutine still exports: either way goroutines and the
		// exporter's connection would outlive shutdown. So the provider
		// gets a ctx that never ends, and ctx's end aborts the export in
		// flight instead (see abortableExporter), which lets the processor
		// drain what is left at once and close the exporter.
		stop := context.AfterFunc(ctx, abort)
		err := tp.Shutdown(context.WithoutCancel(ctx))
		if !stop() {
			// Cut short: the aborted exports lost spans.
			err = errors.Join(err, context.Cause(ctx))
		}
		abort()
		if err != nil {
			return fmt.Errorf("shutdown tracer provider: %w", err)
		}
		return nil
	}, nil
}

// newMeterProvider returns an SDK meter provider read by a Prometheus
// exporter on a fresh registry that also holds the Go and process
// collectors and, when export is set, by the periodic reader autoexport
// builds from the environment (OTLP push; with the headers of h's file,
// see newMetricReader).
func newMeterProvider(ctx context.Context, res *resource.Resource, export bool, h fileHeaders) (*sdkmetric.MeterProvider, *prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, fmt.Errorf("register go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, fmt.Errorf("register process collector: %w", err)
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(exp)}
	if export {
		r, err := newMetricReader(ctx, h)
		if err != nil {
			return nil, nil, fmt.Errorf("metric exporter: %w: %w", ErrInvalidOptions, err)
		}
		if !autoexport.IsNoneMetricReader(r) {
			mpOpts = append(mpOpts, sdkmetric.WithReader(r))
		}
	}
	return sdkmetric.NewMeterProvider(mpOpts...), reg, nil
}

// onceShutdown returns the shutdown func of the OTel dice example: it runs
// the cleanups in reverse order of creation, like deferred calls, each once,
// and joins their errors. It is safe for concurrent use.
func onceShutdown(cleanups *[]func(context.Context) error) func(context.Context) error {
	var mu sync.Mutex
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		var err error
		for i := len(*cleanups) - 1; i >= 0; i-- {
			err = errors.Join(err, (*cleanups)[i](ctx))
		}
		*cleanups = nil
		return err
	}
}
