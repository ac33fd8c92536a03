package events

import "errors"

// Sentinel errors returned by this package; match them with errors.Is.
var (
	// ErrBadToken means a subject token is not the output of EscapeToken.
	ErrBadToken = errors.New("malformed subject token")
	// ErrBadSubject means a subject does not have the events layout.
	ErrBadSubject = errors.New("malformed event subject")
	// ErrUnknownResource means a resource name or enum value is not one of ours.
	ErrUnknownResource = errors.New("unknown resource")
	// ErrBadEvent means an event failed to decode or is inconsistent.
	ErrBadEvent = errors.New("malformed resource event")
	// ErrObjectTooLarge marks a reference event: the object was larger than
	// the payload limit and was left out (see NewMsgLimit and Decode).
	ErrObjectTooLarge = errors.New("object too large for an event, reference only")
	// ErrTooLarge means not even a reference event fits the payload limit.
	ErrTooLarge = errors.New("event over the payload limit")
)
