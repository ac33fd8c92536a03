package authz

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrUnauthenticated is returned by an authority that does not accept the
// caller's credentials (the API's 401). The proxy answers 401.
var ErrUnauthenticated = errors.New("authority did not accept the credentials")

// ErrUnavailable wraps every failure to get an answer from the authority
// (unreachable, timed out, an unexpected status). The proxy answers 503:
// an authority that cannot be asked never allows.
var ErrUnavailable = errors.New("authority unavailable")

// ErrInvalidConfig is returned by the constructors for an unusable Config.
var ErrInvalidConfig = errors.New("invalid authz config")

// Error is a refusal by [Authorizer.Authorize]. Code is the HTTP status the
// proxy answers (401, 403 or 503); Reason is safe to show the caller; Err,
// when set, is the cause for logs only.
type Error struct {
	Code   int
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Reason, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

// Message is the short error of the proxy's JSON body for e's code.
func (e *Error) Message() string {
	switch e.Code {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	default:
		return "authorization unavailable"
	}
}
