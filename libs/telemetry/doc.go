// Package telemetry builds a service's logger, tracer provider and meter
// provider.
//
// [NewLogger] returns a JSON slog logger at a LOG_LEVEL-style level. [Setup]
// returns OpenTelemetry providers: traces go to an OTLP gRPC collector when an
// endpoint is given and are otherwise recorded but not exported (so trace
// context still propagates through NATS headers and gRPC); metrics are read
// by a Prometheus exporter registered on a fresh [prometheus.Registry] that
// the health server serves on /metrics.
//
// The package reads no environment variables: each service reads LOG_LEVEL
// and OTEL_EXPORTER_OTLP_ENDPOINT in its internal/config and passes them in.
package telemetry
