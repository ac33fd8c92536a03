package telemetry

import (
	"math"
	"strconv"
	"strings"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The sampler variables of the specification. The SDK reads them itself
// when [Setup] builds the tracer provider (Setup sets no sampler, which
// would override them); unset, the sampler is parentbased_always_on.
const (
	EnvTracesSampler    = "OTEL_TRACES_SAMPLER"
	EnvTracesSamplerArg = "OTEL_TRACES_SAMPLER_ARG"
)

// Values of OTEL_TRACES_SAMPLER the Go SDK implements. The
// specification's jaeger_remote, parentbased_jaeger_remote and xray need
// samplers the SDK does not have: it would sample everything instead.
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// checkSamplerEnv records an OTEL_TRACES_SAMPLER the SDK does not
// implement (any case, as the SDK reads it) and an OTEL_TRACES_SAMPLER_ARG
// that is not a probability from 0 to 1. On either the SDK logs once to
// the OTel error handler and keeps sampling every trace (a bad ratio) or
// uses parentbased_always_on (a bad name). An argument without a ratio
// sampler is refused as well: the SDK ignores it, so OTEL_TRACES_SAMPLER_ARG
// alone would look like sampling and sample everything.
func checkSamplerEnv(l *envconfig.Loader) {
	raw := strings.TrimSpace(l.String(EnvTracesSampler, ""))
	sampler := strings.ToLower(raw)
	arg := strings.TrimSpace(l.String(EnvTracesSamplerArg, ""))
	switch sampler {
	case SamplerTraceIDRatio, SamplerParentBasedTraceIDRatio:
		if arg == "" {
			return // ratio 1, the specification's default
		}
		// The SDK parses it so (NaN passes its range check and then
		// samples nothing).
		if r, err := strconv.ParseFloat(arg, 64); err != nil || math.IsNaN(r) || r < 0 || r > 1 {
			l.Invalid(EnvTracesSamplerArg, "a sampling probability from 0 to 1 (e.g. 0.25)", arg, nil)
		}
	case "", SamplerAlwaysOn, SamplerAlwaysOff, SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff:
		if arg != "" {
			l.Invalid(EnvTracesSamplerArg, "unset unless "+EnvTracesSampler+" is "+SamplerTraceIDRatio+" or "+SamplerParentBasedTraceIDRatio+" (the only samplers that read it)", arg, nil)
		}
	default:
		l.Invalid(EnvTracesSampler, "one of "+strings.Join([]string{
			SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio,
			SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio,
		}, "|"), raw, nil)
	}
}
