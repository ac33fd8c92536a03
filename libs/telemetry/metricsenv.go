package telemetry

import (
	"slices"
	"strconv"
	"strings"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The metric variables of the specification beyond batching. The SDK
// (go.opentelemetry.io/otel/sdk/metric v1.47.0) reads the exemplar filter
// whenever [Setup] builds the meter provider, so it applies to /metrics as
// well as to the OTLP push (Setup sets no filter, which would override
// it). autoexport (v0.72.0) reads the producers when it builds the OTLP or
// console metric push, and only then.
const (
	EnvMetricsExemplarFilter = "OTEL_METRICS_EXEMPLAR_FILTER"
	EnvMetricsProducers      = "OTEL_METRICS_PRODUCERS"
)

// The Go SDK's experimental switches (OTEL_GO_X_*) that change what
// Setup's providers do, read by the meter provider (v1.47.0):
//   - OTEL_GO_X_CARDINALITY_LIMIT, the most attribute sets an instrument
//     keeps per collection (default 2000, further ones are aggregated into
//     one otel.metric.overflow=true series; 0 or below: no limit). The SDK
//     deprecates it for the WithCardinalityLimit option, which Setup does
//     not set (it would override the variable).
//   - OTEL_GO_X_PER_SERIES_START_TIMESTAMPS, true for a series' points to
//     start at its first measurement instead of the instrument's creation.
//
// The SDK reads the others of v1.47.0 to no effect here, so they are not
// checked: OTEL_GO_X_OBSERVABILITY (and its older name
// OTEL_GO_X_SELF_OBSERVABILITY) records the SDK's own metrics on the
// global meter provider, which Setup does not set, and OTEL_GO_X_RESOURCE
// only changes resource.Default, which Setup's providers do not use.
const (
	EnvGoXCardinalityLimit         = "OTEL_GO_X_CARDINALITY_LIMIT"
	EnvGoXPerSeriesStartTimestamps = "OTEL_GO_X_PER_SERIES_START_TIMESTAMPS"
)

// Values the metric variables take, as the SDK and autoexport spell them.
var (
	exemplarFilters = []string{"always_on", "always_off", "trace_based"}
	metricProducers = []string{"prometheus", "none"}
)

// checkMetricsEnv records a metric variable that the SDK would ignore or
// misread, accepting exactly what it reads:
//   - an exemplar filter other than always_on, always_off or trace_based
//     (any case, spaces around it allowed: the SDK lowers and trims it).
//     The SDK keeps trace_based for any other value without a word, so
//     "always-off" would keep recording exemplars.
//   - producers other than a comma-separated list of prometheus and none,
//     exactly so spelled (autoexport neither trims nor lowers an entry).
//     autoexport fails on any other at Setup, and only when metrics are
//     pushed, with an error that does not name the variable; refused at
//     start whatever the exporter, as the exporter names are.
//   - a cardinality limit that strconv.Atoi does not read once trimmed, as
//     the SDK reads it: it keeps 2000, telling only the OTel error handler
//     (before Setup installs the service's, so a bare line on stderr
//     naming no variable). 0 and below are the SDK's no limit.
//   - a per-series start timestamp switch other than true or false (any
//     case, no spaces): the SDK reads every other value ("1", "yes",
//     " true") as false without a word.
func checkMetricsEnv(l *envconfig.Loader) {
	if raw := l.String(EnvMetricsExemplarFilter, ""); raw != "" {
		// Empty once trimmed is unset for the SDK (trace_based).
		if v := strings.ToLower(strings.TrimSpace(raw)); v != "" && !slices.Contains(exemplarFilters, v) {
			l.Invalid(EnvMetricsExemplarFilter, "one of "+strings.Join(exemplarFilters, "|")+" (any case)", raw, nil)
		}
	}
	if raw := l.String(EnvMetricsProducers, ""); raw != "" {
		for _, p := range strings.Split(raw, ",") {
			if !slices.Contains(metricProducers, p) {
				l.Invalid(EnvMetricsProducers, "comma-separated producers, each one of "+strings.Join(metricProducers, "|")+", exactly so spelled (no spaces)", raw, nil)
				break
			}
		}
	}
	raw := l.String(EnvGoXCardinalityLimit, "")
	if v := strings.TrimSpace(raw); v != "" {
		if _, err := strconv.Atoi(v); err != nil {
			l.Invalid(EnvGoXCardinalityLimit, "an integer, attribute sets kept per instrument (0 or below: no limit; unset: 2000)", raw, nil)
		}
	}
	if raw := l.String(EnvGoXPerSeriesStartTimestamps, ""); raw != "" && !strings.EqualFold(raw, "true") && !strings.EqualFold(raw, "false") {
		l.Invalid(EnvGoXPerSeriesStartTimestamps, "true or false (any case, no spaces: the SDK reads any other value as false)", raw, nil)
	}
}
