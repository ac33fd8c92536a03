// Package route names the runner endpoints that agui-proxy exposes under
// /sessions/{id} (and, for the platform's runner, under the platform
// backend's /projects/{project}/agentic-sessions/{id}) and validates the ids
// taken from request paths.
//
// The upstream path of every endpoint is a constant, or for the live event
// tap a constant followed by one thread id that can only be a plain path
// segment (ThreadID): nothing else from the request path reaches the runner
// URL (the session and project ids are lookup keys), so the proxy can never
// be steered to another path or host.
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

// ErrInvalidThreadID is returned by [ThreadID] (and [Parse]) for a thread id
// that is not one plain path segment of RFC 3986 unreserved characters.
var ErrInvalidThreadID = errors.New("invalid thread id")

// ErrUnknownEndpoint is returned by [Parse] for paths that name no endpoint.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// MaxSessionIDLen bounds session ids: Kubernetes object names are at most 253
// characters, and session ids are used as such names.
const MaxSessionIDLen = 253

// MaxThreadIDLen bounds thread ids: AG-UI clients use UUIDs or the session
// id, and a runner has no use for a longer path segment.
const MaxThreadIDLen = 256

// Prefix is the path prefix of the session routes.
const Prefix = "/sessions/"

// BackendPrefix is the path prefix of the routes served under the platform
// backend's paths, /projects/{project}/agentic-sessions/{id}{suffix}: the
// platform's runner calls its backend there (BACKEND_API_URL), and
// runner-manager can point it at the proxy.
const BackendPrefix = "/projects/"

// backendSessions separates the project from the session id in a
// BackendPrefix path.
const backendSessions = "/agentic-sessions/"

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
	// Thread marks an endpoint whose path is Suffix + "/" + a thread id,
	// and whose runner path is Upstream followed by that id.
	Thread bool
	// Backend marks the platform backend's run path, served under
	// BackendPrefix only: answered with the run's ids as JSON once the
	// runner has accepted the run, whose stream the proxy then drains
	// itself (the platform's backend answers its runner that way).
	Backend bool
	// FollowsTap marks the events route: a runner that answers its GET
	// with 405 (the platform's runner serves no GET /) is followed through
	// its live tap of the session's thread instead (Target.Tap).
	FollowsTap bool
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
	{Name: "events", Suffix: "/agui/events", Upstream: "/", Methods: []string{http.MethodGet, http.MethodPost}, Stream: true, FollowsTap: true},
	{Name: "run", Suffix: "/agui/run", Upstream: "/", Methods: []string{http.MethodPost}, Stream: true},
	// The platform runner's live tap of a thread: GET /events/{thread_id}.
	{Name: "events_thread", Suffix: "/agui/events", Upstream: "/events/", Methods: []string{http.MethodGet}, Stream: true, Thread: true},
	// The platform backend's run path (BackendPrefix), which the platform's
	// runner POSTs its INITIAL_PROMPT (and workflow greetings) to.
	{Name: "backend_run", Suffix: "/agui/run", Upstream: "/", Methods: []string{http.MethodPost}, Backend: true},
	{Name: "interrupt", Suffix: "/agui/interrupt", Upstream: "/interrupt", Methods: []string{http.MethodPost}},
	{Name: "health", Suffix: "/health", Upstream: "/health", Methods: []string{http.MethodGet}},
	{Name: "mcp_status", Suffix: "/mcp/status", Upstream: "/mcp/status", Methods: []string{http.MethodGet}},
	// The platform runner's side routes its UI reaches through the
	// platform backend, under the backend's names (agui/capabilities,
	// agui/feedback): passed through as /mcp/status is.
	{Name: "capabilities", Suffix: "/agui/capabilities", Upstream: "/capabilities", Methods: []string{http.MethodGet}},
	{Name: "feedback", Suffix: "/agui/feedback", Upstream: "/feedback", Methods: []string{http.MethodPost}},
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

// ThreadID validates a thread id taken from a request path (still escaped:
// any '%' makes it invalid). Only RFC 3986 unreserved characters are
// accepted, and not "." or "..": such a segment reaches the runner exactly
// as sent, unescaped the same by every server, and can never be read as
// another path. It returns [ErrInvalidThreadID].
func ThreadID(id string) error {
	if id == "" || len(id) > MaxThreadIDLen || id == "." || id == ".." {
		return fmt.Errorf("%w: %q", ErrInvalidThreadID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '-' || c == '_' || c == '~':
		default:
			return fmt.Errorf("%w: character %q at %d", ErrInvalidThreadID, c, i)
		}
	}
	return nil
}

// Target is a parsed request path.
type Target struct {
	SessionID string
	// ProjectID is the project named by a BackendPrefix path (empty for
	// /sessions/ paths): the session must belong to it.
	ProjectID string
	// ThreadID is the thread of a Thread endpoint.
	ThreadID string
	Endpoint Endpoint
}

// UpstreamPath is the path requested on the runner.
func (t Target) UpstreamPath() string {
	if t.Endpoint.Thread {
		return t.Endpoint.Upstream + t.ThreadID
	}
	return t.Endpoint.Upstream
}

// Tap returns the target of the runner's live tap of thread (the
// events_thread endpoint's runner path, GET /events/{thread}) for the
// session of t, named as t's endpoint: the events route follows the tap
// for a runner without GET /, and its metrics and logs stay the route's.
// It returns [ErrInvalidThreadID] for a thread that ThreadID refuses.
func (t Target) Tap(thread string) (Target, error) {
	if err := ThreadID(thread); err != nil {
		return Target{}, err
	}
	tap := t
	tap.ThreadID = thread
	for _, ep := range endpoints {
		if ep.Thread {
			name := t.Endpoint.Name
			tap.Endpoint = ep
			tap.Endpoint.Name = name
			return tap, nil
		}
	}
	return Target{}, fmt.Errorf("%w: no tap endpoint", ErrUnknownEndpoint)
}

// Path is the escaped request path that Parse reads as t.
func (t Target) Path() string {
	p := Prefix + t.SessionID + t.Endpoint.Suffix
	if t.Endpoint.Backend {
		p = BackendPrefix + t.ProjectID + backendSessions + t.SessionID + t.Endpoint.Suffix
	}
	if t.Endpoint.Thread {
		p += "/" + t.ThreadID
	}
	return p
}

// Parse splits an escaped request path (url.URL.EscapedPath) of the form
// /sessions/{id}{suffix}, or /projects/{project}/agentic-sessions/{id}{suffix}
// for the Backend endpoints, into the ids and the endpoint. It returns
// [ErrInvalidSessionID] (for the project too), [ErrInvalidThreadID] or
// [ErrUnknownEndpoint]. The chi router only sends those prefixes here;
// Parse does the rest. It runs on every request and allocates nothing for
// a valid path: the Endpoint's Methods are shared and must not be modified.
func Parse(escapedPath string) (Target, error) {
	var t Target
	backend := false
	rest, ok := strings.CutPrefix(escapedPath, Prefix)
	if !ok {
		if rest, ok = strings.CutPrefix(escapedPath, BackendPrefix); !ok {
			return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, escapedPath)
		}
		if t.ProjectID, rest, ok = strings.Cut(rest, backendSessions); !ok {
			return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, escapedPath)
		}
		if err := SessionID(t.ProjectID); err != nil {
			return Target{}, fmt.Errorf("project: %w", err)
		}
		backend = true
	}
	id, suffix, ok := strings.Cut(rest, "/")
	if !ok {
		return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, escapedPath)
	}
	if err := SessionID(id); err != nil {
		return Target{}, err
	}
	t.SessionID = id
	for _, ep := range endpoints {
		if ep.Backend != backend {
			continue
		}
		name := ep.Suffix[1:] // every Suffix starts with '/'
		if !ep.Thread {
			if name == suffix {
				t.Endpoint = ep
				return t, nil
			}
			continue
		}
		if thread, ok := strings.CutPrefix(suffix, name+"/"); ok {
			if err := ThreadID(thread); err != nil {
				return Target{}, err
			}
			t.ThreadID, t.Endpoint = thread, ep
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("%w: %q", ErrUnknownEndpoint, "/"+suffix)
}
