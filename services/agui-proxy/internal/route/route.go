// Package route names the runner endpoints that agui-proxy exposes under
// /sessions/{id} and validates session ids taken from request paths.
//
// The upstream path of every endpoint is a constant: nothing from the
// request path other than the session id (a lookup key) reaches the runner
// URL, so the proxy can never be steered to another path or host.
package route

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// ErrInvalidSessionID is returned by [SessionID] for ids that are empty, too
// long or contain characters outside [A-Za-z0-9._-] (or start with '.', '_'
// or '-').
var ErrInvalidSessionID = errors.New("invalid session id")

// ErrUnknownEndpoint is returned by [Parse] for paths that name no endpoint.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// MaxSessionIDLen bounds session ids: Kubernetes object names are at most 253
// characters, and session ids are used as such names.
const MaxSessionIDLen = 253

// Prefix is the path prefix of all session routes.
const Prefix = "/sessions/"

// Endpoint is one proxied runner endpoint.
type Endpoint struct {
	// Name is the metric and log label of the endpoint.
	Name string
	// Suffix is the path after /sessions/{id}, starting with '/'.
	Suffix string
	// Upstream is the path requested on the runner.
	Upstream string
	// Methods are the HTTP methods accepted (OPTIONS is handled by CORS).
	Methods []string
	// Stream marks long-lived streaming responses: no server write timeout,
	// no upstream timeout, every chunk flushed, SSE keep-alive comments.
	Stream bool
}

// Endpoints returns the proxied endpoints. The slice is new on each call.
func Endpoints() []Endpoint {
	out := make([]Endpoint, len(endpoints))
	for i, e := range endpoints {
		e.Methods = slices.Clone(e.Methods)
		out[i] = e
	}
	return out
}

// endpoints is the table behind Endpoints and Parse. Never modified: Parse
// runs on every request and hands out its entries without copying them.
var endpoints = [...]Endpoint{
	// The runner serves AG-UI runs at POST /; /agui/events is the same
	// stream opened by GET (or POST) with Accept: text/event-stream.
	{Name: "events", Suffix: "/agui/events", Upstream: "/", Methods: []string{http.MethodGet, http.MethodPost}, Stream: true},
	{Name: "run", Suffix: "/agui/run", Upstream: "/", Methods: []string{http.MethodPost}, Stream: true},
	{Name: "interrupt", Suffix: "/agui/interrupt", Upstream: "/interrupt", Methods: []string{http.MethodPost}},
	{Name: "health", Suffix: "/health", Upstream: "/health", Methods: []string{http.MethodGet}},
	{Name: "mcp_status", Suffix: "/mcp/status", Upstream: "/mcp/status", Methods: []string{http.MethodGet}},
	{Name: "repos_status", Suffix: "/repos/status", Upstream: "/repos/status", Methods: []string{http.MethodGet}},
}

// Allows reports whether the endpoint accepts method.
func (e Endpoint) Allows(method string) bool {
	for _, m := range e.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// SessionID validates a session id taken from a request path (still escaped:
// any '%' makes it invalid). It returns [ErrInvalidSessionID].
func SessionID(id string) error {
	if id == "" || len(id) > MaxSessionIDLen {
		return fmt.Errorf("%w: length %d", ErrInvalidSessionID, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '-' || c == '_') && i > 0:
			// Not first, so "." and ".." can never be ids.
		default:
			return fmt.Errorf("%w: character %q at %d", ErrInvalidSessionID, c, i)
		}
	}
	return nil
}

// Target is a parsed request path.
type Target struct {
	SessionID string
	Endpoint  Endpoint
}

// Parse splits an escaped request path (url.URL.EscapedPath) of the form
// /sessions/{id}{suffix} into the session id and its endpoint. It returns
// [ErrInvalidSessionID] or [ErrUnknownEndpoint]. The chi router does the same
// matching for requests; Parse is its reference for fuzzing and tests. It
// runs on every request and allocates nothing for a valid path: the
// Endpoint's Methods are shared and must not be modified.
func Parse(escapedPath string) (Target, error) {
	rest, ok := strings.CutPrefix(escapedPath, Prefix)
	if !ok {
		return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, escapedPath)
	}
	id, suffix, ok := strings.Cut(rest, "/")
	if !ok {
		return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, escapedPath)
	}
	if err := SessionID(id); err != nil {
		return Target{}, err
	}
	for _, ep := range endpoints {
		if ep.Suffix[1:] == suffix { // every Suffix starts with '/'
			return Target{SessionID: id, Endpoint: ep}, nil
		}
	}
	return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, "/"+suffix)
}
