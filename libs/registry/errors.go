package registry

import (
	"errors"
	"fmt"
)

var (
	// ErrClaimed is returned by [Claim] when another record (any owner) already
	// holds the session's key.
	ErrClaimed = errors.New("registry: session already claimed")
	// ErrConflict is returned by [Register] and [Release] when the record changed
	// since the revision the caller holds (compare-and-swap lost).
	ErrConflict = errors.New("registry: revision conflict")
	// ErrNotFound is returned by [Get] and [Register] when the session has no record.
	ErrNotFound = errors.New("registry: session not registered")
	// ErrNotOwner is returned by [Release] when the record belongs to another owner.
	ErrNotOwner = errors.New("registry: not the owner")
	// ErrInvalid is returned when an endpoint lacks a session id or an owner,
	// or a stored record cannot be decoded.
	ErrInvalid = errors.New("registry: invalid endpoint")
	// ErrInvalidOption is returned by an [Option] with an invalid value.
	ErrInvalidOption = errors.New("registry: invalid option")
	// ErrNoRoute is returned by [Table.Resolve] when the session has no
	// routable record: the session is unknown.
	ErrNoRoute = errors.New("registry: no route for session")
	// ErrRouteUnknown is returned by [Table.Resolve] when it cannot tell
	// whether the session has a routable record: the read-through failed
	// or was not made, or the watch did not bring the record read in
	// time. Ask again shortly.
	ErrRouteUnknown = errors.New("registry: route unknown")
	// ErrStale is returned by [Table.Resolve] and [Table.Fresh] when the
	// table has not been confirmed current for longer than its bound
	// (WithStaleAfter). It is an ErrRouteUnknown.
	ErrStale = fmt.Errorf("%w: routing table stale", ErrRouteUnknown)
)
