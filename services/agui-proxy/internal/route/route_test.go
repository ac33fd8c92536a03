package route

import (
	"errors"
	"strings"
	"testing"
)

func TestSessionID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{name: "uuid", id: "3f1c2a9e-8d3b-4c6f-9a51-0e6f1b2c3d4e", ok: true},
		{name: "dots and underscores", id: "session.v1_a", ok: true},
		{name: "single char", id: "a", ok: true},
		{name: "max length", id: strings.Repeat("a", MaxSessionIDLen), ok: true},
		{name: "empty", id: ""},
		{name: "too long", id: strings.Repeat("a", MaxSessionIDLen+1)},
		{name: "dot", id: "."},
		{name: "dotdot", id: ".."},
		{name: "leading dash", id: "-a"},
		{name: "slash", id: "a/b"},
		{name: "escaped slash", id: "a%2Fb"},
		{name: "escaped dotdot", id: "%2E%2E"},
		{name: "backslash", id: `a\b`},
		{name: "space", id: "a b"},
		{name: "colon host", id: "evil.com:80"},
		{name: "at", id: "user@host"},
		{name: "query", id: "a?b"},
		{name: "nul", id: "a\x00"},
		{name: "unicode", id: "séance"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := SessionID(tc.id)
			if tc.ok && err != nil {
				t.Fatalf("SessionID(%q) = %v, want nil", tc.id, err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidSessionID) {
				t.Fatalf("SessionID(%q) = %v, want ErrInvalidSessionID", tc.id, err)
			}
		})
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		path     string
		id       string
		project  string
		thread   string
		endpoint string
		upstream string
		err      error
	}{
		{name: "events", path: "/sessions/s1/agui/events", id: "s1", endpoint: "events"},
		{name: "run", path: "/sessions/s1/agui/run", id: "s1", endpoint: "run"},
		{name: "interrupt", path: "/sessions/s1/agui/interrupt", id: "s1", endpoint: "interrupt"},
		{name: "health", path: "/sessions/s1/health", id: "s1", endpoint: "health"},
		{name: "mcp", path: "/sessions/s1/mcp/status", id: "s1", endpoint: "mcp_status"},
		{name: "repos", path: "/sessions/s1/repos/status", id: "s1", endpoint: "repos_status"},
		{name: "capabilities", path: "/sessions/s1/agui/capabilities", id: "s1", endpoint: "capabilities", upstream: "/capabilities"},
		{name: "feedback", path: "/sessions/s1/agui/feedback", id: "s1", endpoint: "feedback", upstream: "/feedback"},
		{name: "no prefix", path: "/session/s1/health", err: ErrUnknownEndpoint},
		{name: "no suffix", path: "/sessions/s1", err: ErrUnknownEndpoint},
		{name: "trailing slash", path: "/sessions/s1/health/", err: ErrUnknownEndpoint},
		{name: "unknown", path: "/sessions/s1/admin", err: ErrUnknownEndpoint},
		{name: "traversal", path: "/sessions/s1/../s2/health", err: ErrUnknownEndpoint},
		{name: "empty id", path: "/sessions//health", err: ErrInvalidSessionID},
		{name: "dotdot id", path: "/sessions/../health", err: ErrInvalidSessionID},
		{name: "encoded slash id", path: "/sessions/a%2Fb/health", err: ErrInvalidSessionID},
		{name: "host in id", path: "/sessions/evil.com:80/health", err: ErrInvalidSessionID},
		{name: "thread tap", path: "/sessions/s1/agui/events/t-1.a_b~c", id: "s1", thread: "t-1.a_b~c", endpoint: "events_thread", upstream: "/events/t-1.a_b~c"},
		{name: "thread tap uuid", path: "/sessions/s1/agui/events/3f1c2a9e-8d3b-4c6f-9a51-0e6f1b2c3d4e", id: "s1",
			thread: "3f1c2a9e-8d3b-4c6f-9a51-0e6f1b2c3d4e", endpoint: "events_thread", upstream: "/events/3f1c2a9e-8d3b-4c6f-9a51-0e6f1b2c3d4e"},
		{name: "thread empty", path: "/sessions/s1/agui/events/", err: ErrInvalidThreadID},
		{name: "thread dotdot", path: "/sessions/s1/agui/events/..", err: ErrInvalidThreadID},
		{name: "thread dot", path: "/sessions/s1/agui/events/.", err: ErrInvalidThreadID},
		{name: "thread two segments", path: "/sessions/s1/agui/events/a/b", err: ErrInvalidThreadID},
		{name: "thread traversal", path: "/sessions/s1/agui/events/../../debug", err: ErrInvalidThreadID},
		{name: "thread escaped slash", path: "/sessions/s1/agui/events/a%2Fb", err: ErrInvalidThreadID},
		{name: "thread escaped dotdot", path: "/sessions/s1/agui/events/%2E%2E", err: ErrInvalidThreadID},
		{name: "thread query char", path: "/sessions/s1/agui/events/a;b", err: ErrInvalidThreadID},
		{name: "thread too long", path: "/sessions/s1/agui/events/" + strings.Repeat("a", MaxThreadIDLen+1), err: ErrInvalidThreadID},
		{name: "backend run", path: "/projects/p1/agentic-sessions/s1/agui/run", id: "s1", project: "p1", endpoint: "backend_run", upstream: "/"},
		{name: "backend other route", path: "/projects/p1/agentic-sessions/s1/agui/events", err: ErrUnknownEndpoint},
		{name: "backend health", path: "/projects/p1/agentic-sessions/s1/health", err: ErrUnknownEndpoint},
		{name: "backend run under sessions", path: "/sessions/s1/agui/run/x", err: ErrUnknownEndpoint},
		{name: "backend no sessions", path: "/projects/p1/s1/agui/run", err: ErrUnknownEndpoint},
		{name: "backend project only", path: "/projects/p1", err: ErrUnknownEndpoint},
		{name: "backend bad project", path: "/projects/../agentic-sessions/s1/agui/run", err: ErrInvalidSessionID},
		{name: "backend project with slash", path: "/projects/a/b/agentic-sessions/s1/agui/run", err: ErrInvalidSessionID},
		{name: "backend bad session", path: "/projects/p1/agentic-sessions/a%2Fb/agui/run", err: ErrInvalidSessionID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tc.path)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Parse(%q) error = %v, want %v", tc.path, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tc.path, err)
			}
			if got.SessionID != tc.id || got.Endpoint.Name != tc.endpoint || got.ProjectID != tc.project || got.ThreadID != tc.thread {
				t.Fatalf("Parse(%q) = %+v, want session %q project %q thread %q endpoint %q", tc.path, got, tc.id, tc.project, tc.thread, tc.endpoint)
			}
			if tc.upstream != "" && got.UpstreamPath() != tc.upstream {
				t.Fatalf("Parse(%q) upstream %q, want %q", tc.path, got.UpstreamPath(), tc.upstream)
			}
			if got.Path() != tc.path {
				t.Fatalf("Parse(%q).Path() = %q", tc.path, got.Path())
			}
		})
	}
}

// FuzzParse checks that arbitrary paths never panic and that every accepted
// path names a valid session id (and project), a known endpoint with a
// constant upstream path (or the tap's constant and one valid thread id),
// and round-trips exactly.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"/sessions/s1/agui/events", "/sessions/s1/agui/run", "/sessions/a.b-c_d/health",
		"/sessions/../health", "/sessions/a%2Fb/mcp/status", "/sessions//repos/status",
		"/sessions/s1/agui/interrupt?x=1", "//sessions/s1/health", "/sessions/s1/health/..",
		"/sessions/s1/agui/events/t1", "/sessions/s1/agui/events/../x", "/projects/p/agentic-sessions/s1/agui/run",
		"/projects/p/agentic-sessions/s1/agui/events/t", "/projects//agentic-sessions/s1/agui/run",
	} {
		f.Add(s)
	}
	upstreams := map[string]bool{}
	for _, ep := range Endpoints() {
		upstreams[ep.Upstream] = true
	}
	f.Fuzz(func(t *testing.T, path string) {
		got, err := Parse(path)
		if err != nil {
			if !errors.Is(err, ErrInvalidSessionID) && !errors.Is(err, ErrUnknownEndpoint) && !errors.Is(err, ErrInvalidThreadID) {
				t.Fatalf("Parse(%q) returned unclassified error %v", path, err)
			}
			return
		}
		if err := SessionID(got.SessionID); err != nil {
			t.Fatalf("Parse(%q) accepted invalid id %q: %v", path, got.SessionID, err)
		}
		// The events route follows the session's thread on a runner
		// without GET /: every session id must be a thread id.
		if tap, err := got.Tap(got.SessionID); err != nil || tap.UpstreamPath() != "/events/"+got.SessionID {
			t.Fatalf("Parse(%q): session id %q as thread: %+v, %v", path, got.SessionID, tap, err)
		}
		if got.ProjectID != "" || got.Endpoint.Backend {
			if err := SessionID(got.ProjectID); err != nil || !got.Endpoint.Backend {
				t.Fatalf("Parse(%q) project %q, backend endpoint %v: %v", path, got.ProjectID, got.Endpoint.Backend, err)
			}
		}
		up := got.UpstreamPath()
		if got.Endpoint.Thread {
			if err := ThreadID(got.ThreadID); err != nil || up != got.Endpoint.Upstream+got.ThreadID {
				t.Fatalf("Parse(%q) thread %q upstream %q: %v", path, got.ThreadID, up, err)
			}
		} else if !upstreams[up] {
			t.Fatalf("Parse(%q) upstream %q not a known constant", path, up)
		}
		if rebuilt := got.Path(); rebuilt != path {
			t.Fatalf("Parse(%q) does not round-trip: %q", path, rebuilt)
		}
	})
}

// TestTap: the events route's follow asks for the runner's tap of a thread,
// named as the events route (its metrics and logs), with the tap's runner
// path; a thread ThreadID refuses is ErrInvalidThreadID. Every session id
// is a thread id (FuzzParse checks it on every accepted path).
func TestTap(t *testing.T) {
	got, err := Parse("/sessions/s1/agui/events")
	if err != nil || !got.Endpoint.FollowsTap {
		t.Fatalf("Parse = %+v, %v: want the events route, which follows the tap", got, err)
	}
	tap, err := got.Tap("s1")
	if err != nil {
		t.Fatal(err)
	}
	if tap.Endpoint.Name != "events" || tap.UpstreamPath() != "/events/s1" || tap.SessionID != "s1" || !tap.Endpoint.Stream {
		t.Fatalf("Tap = %+v (upstream %q), want route events, GET /events/s1", tap, tap.UpstreamPath())
	}
	for _, bad := range []string{"", "..", "a/b", "a%2Fb", strings.Repeat("a", MaxThreadIDLen+1)} {
		if _, err := got.Tap(bad); !errors.Is(err, ErrInvalidThreadID) {
			t.Errorf("Tap(%q) = %v, want ErrInvalidThreadID", bad, err)
		}
	}
	for _, id := range []string{"a", "s-1.x_y", strings.Repeat("z", MaxSessionIDLen)} {
		if err := SessionID(id); err != nil {
			t.Fatal(err)
		}
		if err := ThreadID(id); err != nil {
			t.Errorf("session id %q is no thread id: %v", id, err)
		}
	}
	for _, ep := range Endpoints() {
		if ep.FollowsTap != (ep.Name == "events") {
			t.Errorf("endpoint %s FollowsTap %v, want only the events route", ep.Name, ep.FollowsTap)
		}
	}
}
