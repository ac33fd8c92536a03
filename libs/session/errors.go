package session

import "errors"

// Sentinel errors of this package.
var (
	// ErrInvalidSelector is returned by ParseSelector and NewSelector for a
	// selection they cannot read.
	ErrInvalidSelector = errors.New("invalid session selector")
	// ErrInvalidConditions is returned by ParseConditions for a conditions
	// field that is not a JSON array of condition objects.
	ErrInvalidConditions = errors.New("invalid session conditions")
	// ErrInvalidEnvironmentVariables is wrapped by EnvironmentVariables'
	// errors, whose messages leave this text out: they are the fault
	// alone, for the caller to put its own name of the field in front.
	ErrInvalidEnvironmentVariables = errors.New("invalid session environment variables")
)
