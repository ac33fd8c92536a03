package natsserver

import "errors"

// Sentinel errors returned by this package; match them with errors.Is.
var (
	// ErrNotReady means the server did not accept connections in time.
	ErrNotReady = errors.New("nats server not ready for connections")
	// ErrInvalidOption means an Options field has a value that cannot work.
	ErrInvalidOption = errors.New("invalid nats server option")
)
