package spec

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every *FieldError: the input can never produce a
// valid object, so retrying is pointless.
var ErrInvalid = errors.New("invalid input")

// FieldError says which API field made the desired object impossible and why.
// Field uses the ambient API's field names (e.g. "repos", "labels",
// "group_access[2].role") so the reason reported on the session points at what
// the user wrote.
type FieldError struct {
	Field  string
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("field %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
