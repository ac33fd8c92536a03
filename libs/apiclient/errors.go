package apiclient

import "errors"

// ErrInvalidConfig is wrapped by New when the Config is invalid.
var ErrInvalidConfig = errors.New("apiclient: invalid config")

// ErrNotServing is wrapped by Check when the server is not SERVING.
var ErrNotServing = errors.New("apiclient: server not serving")
