package telemetry

import "errors"

// ErrInvalidLevel is wrapped by [ParseLevel] and [NewLogger] for a level that
// is not debug, info, warn or error.
var ErrInvalidLevel = errors.New("invalid log level")

// ErrInvalidOptions is wrapped by [Setup] for a missing service name or a
// malformed OTLP endpoint.
var ErrInvalidOptions = errors.New("invalid telemetry options")
