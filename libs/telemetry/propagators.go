package telemetry

import (
	"strings"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// EnvPropagators is the specification's OTEL_PROPAGATORS.
const EnvPropagators = "OTEL_PROPAGATORS"

// checkPropagatorsEnv records an OTEL_PROPAGATORS the services cannot
// follow. Every service propagates W3C trace context and baggage, fixed
// (Setup): the events on NATS and the API calls carry traceparent, and a
// service speaking B3 or Jaeger headers would cut every trace at its
// edge. So the variable may name tracecontext and baggage only, and must
// name tracecontext; any other value (b3, jaeger, xray, none) would have
// been silently ignored, and is refused instead.
func checkPropagatorsEnv(l *envconfig.Loader) {
	raw := strings.TrimSpace(l.String(EnvPropagators, ""))
	if raw == "" {
		return
	}
	trace, known := false, true
	for _, p := range strings.Split(raw, ",") {
		switch strings.TrimSpace(p) {
		case "tracecontext":
			trace = true
		case "baggage":
		default:
			known = false
		}
	}
	if !trace || !known {
		l.Invalid(EnvPropagators, "tracecontext, optionally with baggage (the services propagate W3C trace context and baggage, fixed: events and API calls carry traceparent)", raw, nil)
	}
}
