package memapi

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrInvalidOption is wrapped by every Option that rejects its value.
var ErrInvalidOption = errors.New("memapi: invalid option")

// ErrServing is returned by Serve when the Server is already serving or has
// served: a Server serves at most once.
var ErrServing = errors.New("memapi: server already served")

// ErrBadBody is wrapped by the REST error message (HTTP 400) when a request
// body is not a valid protojson document of the expected message.
var ErrBadBody = errors.New("memapi: bad request body")

func errNotFound(id string) error {
	return status.Errorf(codes.NotFound, "not found: %q", id)
}

func errInvalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
