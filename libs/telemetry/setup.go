package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// Options configures [Setup].
type Options struct {
	// ServiceName is the OTel service.name and the name of the returned
	// Tracer and Meter. Required.
	ServiceName string
	// Version is the OTel service.version (the build version).
	Version string
	// OTLPEndpoint is where traces are sent over OTLP gRPC, usually the value
	// of OTEL_EXPORTER_OTLP_ENDPOINT. "http://host:4317" is plaintext,
	// "https://host:4317" uses TLS with the system roots, and a bare
	// "host:4317" is plaintext like the Collector's default gRPC receiver.
	// Empty means spans are recorded (so trace context propagates) but not
	// exported.
	OTLPEndpoint string
	// Logger, when set, receives OpenTelemetry's internal errors (failed
	// exports) at warn level instead of OTel's default stderr logger. This
	// sets the process-wide OTel error handler.
	Logger *slog.Logger
}

// Providers are the telemetry handles a service passes to its components.
// All are safe for concurrent use.
type Providers struct {
	// TracerProvider is an SDK tracer provider; it is also installed as the
	// OTel global so instrumentation libraries find it.
	TracerProvider trace.TracerProvider
	// MeterProvider is an SDK meter provider read by the Prometheus exporter.
	MeterProvider metric.MeterProvider
	// Registry holds the OTel metrics plus the Go runtime and process
	// collectors; serve it on /metrics (see package health).
	Registry *prometheus.Registry
	// Tracer and Meter are named after Options.ServiceName.
	Tracer trace.Tracer
	Meter  metric.Meter
}

// Setup builds the tracer and meter providers described in the package doc
// and returns them with a shutdown func that flushes and stops them. Call
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
// Errors wrap [ErrInvalidOptions] for bad options.
func Setup(ctx context.Context, opts Options) (Providers, func(context.Context) error, error) {
	if opts.ServiceName == "" {
		return Providers{}, nil, fmt.Errorf("telemetry setup: service name is empty: %w", ErrInvalidOptions)
	}
	exporterOpts, err := otlpOptions(opts.OTLPEndpoint)
	if err != nil {
		return Providers{}, nil, err
	}

	var cleanups []func(context.Context) error
	shutdown := onceShutdown(&cleanups)
	fail := func(err error) (Providers, func(context.Context) error, error) {
		return Providers{}, nil, errors.Join(err, shutdown(ctx))
	}

	attrs := []attribute.KeyValue{semconv.ServiceName(opts.ServiceName)}
	if opts.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(opts.Version))
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return fail(fmt.Errorf("telemetry resource: %w", err))
	}

	tp, tpShutdown, err := newTracerProvider(ctx, res, exporterOpts)
	if err != nil {
		return fail(fmt.Errorf("otlp trace exporter %s: %w", opts.OTLPEndpoint, err))
	}
	cleanups = append(cleanups, tpShutdown)

	mp, reg, err := newMeterProvider(res)
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func(ctx context.Context) error {
		if err := mp.Shutdown(ctx); err != nil {
			return fmt.Errorf("shutdown meter provider: %w", err)
		}
		return nil
	})

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

// newTracerProvider returns an SDK tracer provider that batches spans to an
// OTLP exporter built from exporterOpts, or exports nothing when they are
// nil, with its shutdown func.
func newTracerProvider(ctx context.Context, res *resource.Resource, exporterOpts []otlptracegrpc.Option) (*sdktrace.TracerProvider, func(context.Context) error, error) {
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	aborted := make(chan struct{})
	abort := sync.OnceFunc(func() { close(aborted) })
	if exporterOpts != nil {
		// otlptracegrpc dials lazily, so New does not block on the collector.
		exp, err := otlptracegrpc.New(ctx, exporterOpts...)
		if err != nil {
			return nil, nil, fmt.Errorf("new exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(abortableExporter{SpanExporter: exp, abort: aborted}))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)
	return tp, func(ctx context.Context) error {
		err := tp.Shutdown(ctx)
		// After a clean shutdown nothing is in flight; after one cut short by
		// ctx this ends the export still retrying (see abortableExporter).
		abort()
		if err != nil {
			return fmt.Errorf("shutdown tracer provider: %w", err)
		}
		return nil
	}, nil
}

// newMeterProvider returns an SDK meter provider read by a Prometheus
// exporter on a fresh registry that also holds the Go and process
// collectors.
func newMeterProvider(res *resource.Resource) (*sdkmetric.MeterProvider, *prometheus.Registry, error) {
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
	return sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exp)), reg, nil
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

// otlpOptions turns the endpoint into exporter options; nil means no export.
func otlpOptions(endpoint string) ([]otlptracegrpc.Option, error) {
	if endpoint == "" {
		return nil, nil
	}
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
			// WithEndpointURL makes every scheme but https plaintext.
			return []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(endpoint)}, nil
		}
	} else if host, port, err := net.SplitHostPort(endpoint); err == nil && host != "" {
		if _, err := strconv.ParseUint(port, 10, 16); err == nil {
			return []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure()}, nil
		}
	}
	return nil, fmt.Errorf("otlp endpoint %q: want http://HOST:PORT, https://HOST:PORT or HOST:PORT: %w",
		endpoint, ErrInvalidOptions)
}
