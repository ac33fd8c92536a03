package envconfig

import (
	"errors"
	"fmt"
)

// ErrMissing is wrapped by a [*VarError] for a required variable that is
// unset or empty.
var ErrMissing = errors.New("required variable not set")

// ErrInvalid is wrapped by a [*VarError] for a variable whose value does not
// have the expected form, and by [ReadSecretFile] (and so [NewSecretFile])
// for a file that holds no usable secret.
var ErrInvalid = errors.New("invalid variable value")

// VarError describes one bad environment variable. Its message names the
// variable, the expected form and the value found:
//
//	NAME: want <Want>, got "<Got>"
//
// It wraps [ErrMissing] or [ErrInvalid] and, when set, Cause, so callers can
// use errors.Is on the joined result of [Loader.Err].
type VarError struct {
	// Name is the environment variable.
	Name string
	// Want describes the expected form, e.g. `a Go duration such as "30s"`.
	Want string
	// Got is the raw value; empty when the variable was missing.
	Got string
	// Missing is true for a required variable that was not set.
	Missing bool
	// Cause is an underlying error worth reporting (e.g. the stat error of a
	// file), or nil.
	Cause error
}

// Error implements error.
func (e *VarError) Error() string {
	var msg string
	switch {
	case e.Missing:
		msg = fmt.Sprintf("%s: required, want %s, got nothing", e.Name, e.Want)
	default:
		msg = fmt.Sprintf("%s: want %s, got %q", e.Name, e.Want, e.Got)
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap returns [ErrMissing] or [ErrInvalid], plus Cause when set.
func (e *VarError) Unwrap() []error {
	kind := ErrInvalid
	if e.Missing {
		kind = ErrMissing
	}
	if e.Cause != nil {
		return []error{kind, e.Cause}
	}
	return []error{kind}
}
