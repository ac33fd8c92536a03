package telemetry

import (
	"fmt"
	"math"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// The span limit variables of the specification. The SDK reads them when
// [Setup] builds the tracer provider (Setup sets no limits, which would
// override them). A span variable, when set, wins over the general one of
// its kind (OTEL_ATTRIBUTE_*); the SDK reads the general ones for spans
// only, as this package exports no logs.
const (
	EnvAttributeValueLengthLimit     = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
	EnvAttributeCountLimit           = "OTEL_ATTRIBUTE_COUNT_LIMIT"
	EnvSpanAttributeValueLengthLimit = "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"
	EnvSpanAttributeCountLimit       = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"
	EnvSpanEventCountLimit           = "OTEL_SPAN_EVENT_COUNT_LIMIT"
	EnvSpanLinkCountLimit            = "OTEL_SPAN_LINK_COUNT_LIMIT"
	EnvEventAttributeCountLimit      = "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"
	EnvLinkAttributeCountLimit       = "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT"
)

// checkLimitsEnv records a span limit that is not an integer from 0 to
// 2^31-1 written as the SDK reads it (see sdkInt). On any other value the
// SDK keeps its default (no limit for value lengths, 128 for counts)
// without a word, and does not fall back to the general variable when a
// span one is malformed. A negative limit it reads as no limit at all,
// where the specification calls it invalid (other SDKs use the default):
// refused too, so an unlimited span cannot come from a typo.
func checkLimitsEnv(l *envconfig.Loader) {
	want := fmt.Sprintf("an integer from 0 to %d without spaces (unset for the default; no negative \"no limit\")", math.MaxInt32)
	for _, name := range []string{
		EnvAttributeValueLengthLimit, EnvAttributeCountLimit,
		EnvSpanAttributeValueLengthLimit, EnvSpanAttributeCountLimit,
		EnvSpanEventCountLimit, EnvSpanLinkCountLimit,
		EnvEventAttributeCountLimit, EnvLinkAttributeCountLimit,
	} {
		sdkInt(l, name, 0, 0, math.MaxInt32, want)
	}
}
