package apiclient

import "errors"

// ErrInvalidConfig is wrapped by New when the Config is invalid.
var ErrInvalidConfig = errors.New("apiclient: invalid config")

// ErrNotServing is wrapped by Check when the server is not SERVING.
var ErrNotServing = errors.New("apiclient: server not serving")

// ErrUnreachable is wrapped by Reachable while the connection to the API
// cannot be made.
var ErrUnreachable = errors.New("apiclient: api unreachable")

// ErrListNoProgress is wrapped by ListAll when pages stop bringing new
// objects before the server's total is reached (a server that ignores the
// page parameter).
var ErrListNoProgress = errors.New("apiclient: list makes no progress")
