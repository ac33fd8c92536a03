// Package telemetry builds a service's logger, tracer provider and meter
// provider.
//
// [NewLogger] returns a JSON slog logger at a LOG_LEVEL-style level. [Setup]
// returns OpenTelemetry providers. Export is configured by the standard
// OpenTelemetry environment variables, read by the SDK itself
// (go.opentelemetry.io/contrib/exporters/autoexport): OTEL_TRACES_EXPORTER,
// OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_PROTOCOL (grpc or
// http/protobuf, the default), OTEL_EXPORTER_OTLP_ENDPOINT, the per-signal
// OTEL_EXPORTER_OTLP_{TRACES,METRICS}_{ENDPOINT,PROTOCOL}, headers,
// timeouts, compression, certificates, OTEL_BSP_* batching,
// OTEL_METRIC_EXPORT_INTERVAL, the span limits (OTEL_SPAN_*_LIMIT,
// OTEL_ATTRIBUTE_*_LIMIT, ...), the sampler (OTEL_TRACES_SAMPLER, _ARG) and
// the resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, which override
// the service's own service.name and service.version), the metrics'
// OTEL_METRICS_EXEMPLAR_FILTER and OTEL_METRICS_PRODUCERS, and the SDK's
// experimental OTEL_GO_X_CARDINALITY_LIMIT and
// OTEL_GO_X_PER_SERIES_START_TIMESTAMPS. The headers may instead come
// from files (OTEL_EXPORTER_OTLP_HEADERS_FILE and the per-signal ones, a
// mounted Secret): the SDK reads headers from the environment only, so
// Setup builds such a signal's OTLP exporter itself, reading the file
// once. [LoadEnv] (called
// by each service's config) checks the variables whose mistakes would
// otherwise only show as lost or wrong telemetry and decides which signals
// to export at all: nothing unless an exporter or an endpoint is set, and
// nothing with OTEL_SDK_DISABLED=true.
//
// Spans are recorded unless the SDK is disabled, so trace context
// propagates through NATS headers (package events) and gRPC (package
// apitrace) even when nothing is exported; disabled, a span started under
// an incoming context carries that context on unchanged. Metrics are read
// by a Prometheus exporter registered on a fresh [prometheus.Registry]
// that the health server serves on /metrics (also when the SDK is
// disabled), and, when exported, pushed over OTLP as well.
//
// [ContextWithAttributes] puts attributes on a ctx that every span started
// under it receives (Setup's provider is wrapped with
// [WithContextAttributes]): a consumer tags its handler's ctx with the event's object
// (AttrObjectID, AttrProjectID), and every span of the handler carries it.
package telemetry
