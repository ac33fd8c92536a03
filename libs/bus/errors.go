package bus

import "errors"

// Sentinel errors returned by this package; match them with errors.Is.
var (
	// ErrInvalidConfig means a ConnectConfig, StreamConfig or bucket config
	// cannot work (conflicting credentials, missing name, ...).
	ErrInvalidConfig = errors.New("invalid nats config")
	// ErrNotConnected means the connection was not established before the
	// context ended.
	ErrNotConnected = errors.New("nats not connected")
	// ErrClosed means the connection was closed for good: nats.go does not
	// reconnect after it (see OnClosed).
	ErrClosed = errors.New("nats connection closed for good")
	// ErrWatchClosed means a KV watch ended without being asked to (its
	// subscription or connection closed).
	ErrWatchClosed = errors.New("kv watch closed")
)
