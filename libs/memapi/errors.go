package memapi

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/restapi"
)

// ErrInvalidOption is wrapped by every Option that rejects its value.
var ErrInvalidOption = errors.New("memapi: invalid option")

// ErrServing is returned by Serve when the Server is already serving or has
// served: a Server serves at most once.
var ErrServing = errors.New("memapi: server already served")

// APIError is an error the API answers with, in both of its forms: a gRPC
// status (GRPCStatus, so gRPC handlers return it as is) and the REST error
// object (HTTP status and the real server's error id). The reasons are the
// real server's texts where they were measured.
type APIError struct {
	Code   codes.Code
	Status int
	ID     int
	Reason string
}

func (e *APIError) Error() string { return e.Reason }

// GRPCStatus makes status.FromError and the gRPC server see the code.
func (e *APIError) GRPCStatus() *status.Status { return status.New(e.Code, e.Reason) }

// errNotFound is the real server's 404 (id 7): "Session with id='nope' not
// found".
func errNotFound(kind, id string) error {
	return &APIError{Code: codes.NotFound, Status: http.StatusNotFound, ID: restapi.ErrorIDNotFound,
		Reason: fmt.Sprintf("%s with id='%s' not found", kind, id)}
}

// errAlreadyExists is the real server's 409 (id 6) for a create onto a
// taken id or unique key (a deleted object's too): rh-trex-ai's
// HandleCreateError (pkg/services/util.go) turns any error containing
// "violates unique constraint" into errors.Conflict("This %s already
// exists"), AlreadyExists over gRPC.
func errAlreadyExists(kind string) error {
	return &APIError{Code: codes.AlreadyExists, Status: http.StatusConflict, ID: restapi.ErrorIDConflict,
		Reason: fmt.Sprintf("This %s already exists", kind)}
}

// errUpdateConflict is the real server's 409 (id 6) for an update onto a
// taken name (a project renamed to another's name, settings moved to a
// project that has some): rh-trex's services.HandleUpdateError, which its
// Replace methods use and its gRPC handlers send as AlreadyExists with the
// same text (read from the code, not measured).
func errUpdateConflict(kind string) error {
	return &APIError{Code: codes.AlreadyExists, Status: http.StatusConflict, ID: restapi.ErrorIDConflict,
		Reason: fmt.Sprintf("Changes to %s conflict with existing records", kind)}
}

// errConflict is the real server's 409 (id 6) for a refused transition.
// Over gRPC (which has no start/stop) it would be FailedPrecondition.
func errConflict(reason string) error {
	return &APIError{Code: codes.FailedPrecondition, Status: http.StatusConflict, ID: restapi.ErrorIDConflict, Reason: reason}
}

// errValidation is the real server's 400 (id 8); InvalidArgument over gRPC.
func errValidation(format string, args ...any) error {
	return &APIError{Code: codes.InvalidArgument, Status: http.StatusBadRequest, ID: restapi.ErrorIDValidation,
		Reason: fmt.Sprintf(format, args...)}
}

// errMalformed is the real server's 400 (id 17) for a body it cannot read:
// "Invalid request format: <why>".
func errMalformed(why string) error {
	return &APIError{Code: codes.InvalidArgument, Status: http.StatusBadRequest, ID: restapi.ErrorIDMalformedRequest,
		Reason: "Invalid request format: " + why}
}

// errSearchSyntax is the real server's 400 (id 21) for a search its TSL
// parser rejects: rh-trex-ai's generic list (pkg/services/generic.go,
// buildSearchValues) answers errors.BadRequest("Failed to parse search
// query: %s", search), quoting the search (trimmed of spaces) rather than
// saying what is wrong. Read from its code, not measured.
func errSearchSyntax(search string) error {
	return &APIError{Code: codes.InvalidArgument, Status: http.StatusBadRequest, ID: restapi.ErrorIDBadRequest,
		Reason: "Failed to parse search query: " + search}
}

// errSearchUnsupported is memapi's own 400 (id 23, rh-trex's
// ErrorFailedToParseSearch, which the real list never sends) for a search
// the real parser takes but memapi cannot evaluate (search.go): a limit of
// the imitation, so the id differs from the real parse error's and the
// reason says what memapi lacks.
func errSearchUnsupported(why string) error {
	return &APIError{Code: codes.InvalidArgument, Status: http.StatusBadRequest, ID: restapi.ErrorIDBadSearch,
		Reason: "Failed to parse search query: " + why}
}

// errForeignKey is the real server's answer to a row whose foreign key
// names no row, from a create or an update (op): rh-trex-ai's
// HandleCreateError / HandleUpdateError (pkg/services/util.go) see no
// unique violation and answer errors.GeneralError("Unable to <op> <kind>:
// <the database error>"), 500 id 9, which the gRPC handlers send as
// Internal with the same text (grpcutil.ServiceErrorToGRPC). The database
// error is pgconn's PgError text ("<severity>: <message> (SQLSTATE
// <code>)", jackc/pgconn v1.14.3, errors.go) around PostgreSQL's message
// for SQLSTATE 23503. Read from the code, not measured.
func errForeignKey(op, kind, table, constraint string) error {
	return &APIError{Code: codes.Internal, Status: http.StatusInternalServerError, ID: restapi.ErrorIDGeneral,
		Reason: fmt.Sprintf(`Unable to %s %s: ERROR: insert or update on table "%s" violates foreign key constraint "%s" (SQLSTATE 23503)`,
			op, kind, table, constraint)}
}

// errInternal is a 500 (id 9): a bug of memapi, never an expected answer.
func errInternal(err error) error {
	return &APIError{Code: codes.Internal, Status: http.StatusInternalServerError, ID: restapi.ErrorIDGeneral, Reason: err.Error()}
}

// errRequired is the gRPC handlers' "<field> is required" (InvalidArgument),
// the real server's answer to a create without its required field.
func errRequired(field string) error {
	return errValidation("%s is required", field)
}

// maxStringField is the longest value the real gRPC handlers take in a
// checked string field (rh-trex's grpcutil.MaxStringFieldLength).
const maxStringField = 255

// checkID is the real gRPC handlers' check of the id of a get, update or
// delete (grpcutil.ValidateRequiredID, read from the code): an empty id is
// InvalidArgument "id is required", before any lookup. REST has no such
// call: an empty id is another route.
func checkID(id string) error {
	if id == "" {
		return errRequired("id")
	}
	return nil
}

// checkRequired is the real gRPC creates' check of their required field
// (grpcutil.ValidateStringField): present and at most maxStringField bytes.
func checkRequired(field, value string) error {
	switch {
	case value == "":
		return errRequired(field)
	case len(value) > maxStringField:
		return errValidation("%s exceeds maximum length of %d", field, maxStringField)
	}
	return nil
}
