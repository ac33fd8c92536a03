package apiclient

import "errors"

// ErrInvalidConfig is wrapped by New when the Config is invalid.
var ErrInvalidConfig = errors.New("apiclient: invalid config")
