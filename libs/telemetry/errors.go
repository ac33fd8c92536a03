package telemetry

import "errors"

// ErrInvalidLevel is wrapped by [ParseLevel] and [NewLogger] for a level that
// is not debug, info, warn or error.
var ErrInvalidLevel = errors.New("invalid log level")

// ErrInvalidOptions is wrapped by [Setup] for a missing service name or an
// exporter the SDK cannot build from the OTEL_* environment (an unknown
// exporter or protocol that LoadEnv would have reported).
var ErrInvalidOptions = errors.New("invalid telemetry options")
