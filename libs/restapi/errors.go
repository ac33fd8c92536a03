package restapi

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrBadObject is matched (errors.Is) by every error of UnmarshalObject: the
// document is not a JSON object of the message's fields.
var ErrBadObject = errors.New("restapi: bad object")

// DecodeError is the error of UnmarshalObject. Detail says what is wrong in
// Go's encoding/json wording where one applies (`unknown field "x"`,
// "unexpected end of JSON input"), so a server can put it in its reason.
type DecodeError struct {
	Detail string
}

func (e *DecodeError) Error() string { return ErrBadObject.Error() + ": " + e.Detail }

// Is makes errors.Is(err, ErrBadObject) true.
func (e *DecodeError) Is(target error) bool { return target == ErrBadObject }

func decodeError(format string, args ...any) error {
	return &DecodeError{Detail: fmt.Sprintf(format, args...)}
}

// Error ids of the real server (its error table, inherited from rh-trex).
// Measured: 6, 7, 8 and 17. The others are what the upstream source uses
// for the same situations; their wire form was not measured.
const (
	ErrorIDConflict         = 6  // 409: duplicate, refused start/stop
	ErrorIDNotFound         = 7  // 404
	ErrorIDValidation       = 8  // 400: e.g. an invalid project name
	ErrorIDGeneral          = 9  // 500
	ErrorIDNotImplemented   = 10 // 405
	ErrorIDMalformedRequest = 17 // 400: bad JSON, missing required property
	ErrorIDBadRequest       = 21 // 400: e.g. a search query the real parser refuses
	ErrorIDBadSearch        = 23 // 400: rh-trex's search parse error, which the real list never sends (memapi: a search it cannot evaluate)
)

// ErrorKind is the kind of every error object.
const ErrorKind = "Error"

// codePrefix is the real server's error code prefix.
const codePrefix = "ambient-api-server-"

// Error is the real server's error object. It implements error; Status is
// the HTTP status it came with (not part of the JSON).
type Error struct {
	Kind        string `json:"kind"`
	ID          string `json:"id"`
	Code        string `json:"code"`
	Href        string `json:"href"`
	Reason      string `json:"reason"`
	OperationID string `json:"operation_id"`

	Status int `json:"-"`
}

// NewError returns the error object with id (one of the ErrorID constants),
// HTTP status, reason and the request's operation id.
func NewError(status, id int, reason, operationID string) *Error {
	s := strconv.Itoa(id)
	return &Error{
		Kind:        ErrorKind,
		ID:          s,
		Code:        codePrefix + s,
		Href:        BasePath + "/errors/" + s,
		Reason:      reason,
		OperationID: operationID,
		Status:      status,
	}
}

// Error returns "<status> <code>: <reason>" (the code is absent for a body
// that was no error object, e.g. the plain-text 401).
func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%d: %s", e.Status, e.Reason)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Reason)
}
