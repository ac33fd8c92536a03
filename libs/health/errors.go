package health

import "errors"

// ErrInvalidCheck is returned by [New] and [Server.AddCheck] for an empty
// check name or a nil check.
var ErrInvalidCheck = errors.New("invalid readiness check")

// ErrDuplicateCheck is returned by [New] and [Server.AddCheck] when a check
// name is already registered.
var ErrDuplicateCheck = errors.New("duplicate readiness check")

// ErrInvalidOptions is returned by [New] for a negative timeout.
var ErrInvalidOptions = errors.New("invalid health server options")
