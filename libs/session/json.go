package session

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// DecodeJSON decodes raw, a session field the API stores as JSON text
// (repos, environment_variables, labels, annotations, resource_overrides),
// into a T: exactly one JSON value, white space around it allowed. A value
// followed by anything else is refused with "trailing data after the JSON
// value", a message that says what is wrong where json.Unmarshal would
// report only an invalid character: `{"A":"1"} {"B":"2"}` is a user's
// mistake to point at, not a syntax error deep in the text. Every executor
// reads a session's JSON fields with it, so none accepts what another
// refuses.
func DecodeJSON[T any](raw string) (T, error) {
	var v T
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&v); err != nil {
		var zero T
		return zero, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var zero T
		return zero, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// clip shortens s for an error message, so that a megabyte of garbage in
// a field does not end up in a condition or a log line.
func clip(s string) string {
	const maxLen = 128
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}
