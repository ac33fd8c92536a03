package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
)

// ErrEndpointGone is the cancel cause of a stream whose runner endpoint was
// removed from, or replaced in, the routing table while the stream ran.
var ErrEndpointGone = errors.New("runner endpoint removed")

// ErrAccessRevoked is the cancel cause of a stream whose request is no
// longer authenticated or authorized (Config.RecheckEvery).
var ErrAccessRevoked = errors.New("access revoked")

// ErrRunnerNotAllowed is the dial error for a runner address outside
// Config.AllowedNetworks.
var ErrRunnerNotAllowed = errors.New("runner address not allowed")

// errBodyTooLarge marks a request body over Config.MaxBodyBytes.
var errBodyTooLarge = errors.New("request body too large")

// statusClientClosed is recorded (never sent) when the client went away
// before a response status was written, as nginx does.
const statusClientClosed = 499

// errorBody is the JSON body of every error the proxy itself answers.
type errorBody struct {
	Error string `json:"error"`
	// Reason says why, where the error alone does not (refusals).
	Reason string `json:"reason,omitempty"`
}

// WriteError answers with status code and the JSON body {"error": msg}. The
// proxy's own errors always use it, never plain text.
func WriteError(w http.ResponseWriter, code int, msg string) {
	writeErrorReason(w, code, msg, "")
}

// writeErrorReason answers {"error": msg, "reason": reason}.
func writeErrorReason(w http.ResponseWriter, code int, msg, reason string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(code)
	// A failed write means the client is gone; there is nobody to tell.
	_ = json.NewEncoder(w).Encode(errorBody{Error: msg, Reason: reason})
}
