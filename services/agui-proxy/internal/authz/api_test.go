package authz

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/memapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

const (
	serviceToken = "service-token-0123456789"
	aliceToken   = "alice-token-0123456789"
	bobToken     = "bob-token-0123456789ab"
)

// api is the in-memory API in multi-user mode behind a real HTTP server
// that counts the session GETs reaching it.
type api struct {
	url    *url.URL
	srv    *httptest.Server
	gets   atomic.Int64
	status atomic.Int64 // when set, every answer is this status (an API in trouble)
}

func startAPI(t *testing.T) (*api, *memapi.Server) {
	t.Helper()
	m, err := memapi.New(memapi.WithToken(serviceToken), memapi.WithUsers([]memapi.User{
		{Token: aliceToken, Name: "alice", Projects: []string{"proj-a"}},
		{Token: bobToken, Name: "bob", Projects: []string{"proj-b"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := &api{}
	h := m.Handler()
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.gets.Add(1)
		if code := a.status.Load(); code != 0 {
			w.WriteHeader(int(code))
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(a.srv.Close)
	a.url, err = url.Parse(a.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return a, m
}

func session(t *testing.T, m *memapi.Server, project string) string {
	t.Helper()
	s, err := m.Sessions().CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: "s", ProjectId: &project})
	if err != nil {
		t.Fatal(err)
	}
	return s.GetMetadata().GetId()
}

func code(err error) int {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	if err == nil {
		return http.StatusOK
	}
	return -1
}

// TestAPIDecisions: the API's answer to the caller's own token decides:
// its session → allowed, another project's → 403, a token it does not know
// → 401, an API in trouble or a 200 that is not the session → 503.
func TestAPIDecisions(t *testing.T) {
	t.Parallel()
	a, m := startAPI(t)
	sA := session(t, m, "proj-a")
	z, err := NewAPI(APIConfig{URL: a.url}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, session, authz string
		status               int // forced API answer
		want                 int
	}{
		{name: "own project", session: sA, authz: "Bearer " + aliceToken, want: 200},
		{name: "own project, write", session: sA, authz: "Bearer " + aliceToken, want: 200},
		{name: "other project", session: sA, authz: "Bearer " + bobToken, want: 403},
		{name: "unknown session", session: "nope", authz: "Bearer " + aliceToken, want: 403},
		{name: "unknown token", session: sA, authz: "Bearer nobody-0123456789abcdef", want: 401},
		{name: "no token", session: sA, want: 401},
		{name: "service token", session: sA, authz: "Bearer " + serviceToken, want: 200},
		{name: "api failing", session: sA, authz: "Bearer " + aliceToken, status: 500, want: 503},
		{name: "api answers 200 but no session", session: sA, authz: "Bearer " + aliceToken, status: 200, want: 503},
	}
	for _, tc := range tests {
		a.status.Store(int64(tc.status))
		err := z.Authorize(t.Context(), Request{SessionID: tc.session, Verb: VerbUpdate, Authorization: tc.authz})
		if got := code(err); got != tc.want {
			t.Fatalf("%s: %d (%v), want %d", tc.name, got, err, tc.want)
		}
	}
	a.status.Store(0)
	a.srv.Close() // unreachable: never allow
	if got := code(z.Authorize(t.Context(), Request{SessionID: sA, Authorization: "Bearer " + aliceToken})); got != 503 {
		t.Fatalf("api down: %d, want 503", got)
	}
}

// TestCache: a decision is reused within the TTL (allowed and denied alike),
// per credential; expiry and Forget ask again; errors are never cached; the
// size bound holds.
func TestCache(t *testing.T) {
	t.Parallel()
	a, m := startAPI(t)
	sA := session(t, m, "proj-a")
	z, err := NewAPI(APIConfig{URL: a.url}, Config{CacheTTL: time.Minute, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	z.now = func() time.Time { return now }
	ask := func(tok string) int {
		return code(z.Authorize(t.Context(), Request{SessionID: sA, Verb: VerbGet, Authorization: "Bearer " + tok}))
	}
	for range 3 {
		if ask(aliceToken) != 200 || ask(bobToken) != 403 {
			t.Fatal("wrong decision")
		}
	}
	if n := a.gets.Load(); n != 2 {
		t.Fatalf("API asked %d times for 6 questions of 2 callers, want 2", n)
	}
	now = now.Add(time.Minute)
	ask(aliceToken)
	if n := a.gets.Load(); n != 3 {
		t.Fatalf("after the TTL: %d asks, want 3", n)
	}
	z.Forget(sA)
	ask(aliceToken)
	if n := a.gets.Load(); n != 4 {
		t.Fatalf("after Forget: %d asks, want 4", n)
	}
	a.status.Store(500)
	ask(aliceToken + "x")
	a.status.Store(0)
	ask(aliceToken + "x")
	if n := a.gets.Load(); n != 6 {
		t.Fatalf("an error was cached: %d asks, want 6", n)
	}
	ask("third-token-0123456789")
	if z.Cached() > 2 {
		t.Fatalf("%d cached decisions, bound is 2", z.Cached())
	}
}

// BenchmarkAuthorizeCached is the per-request cost of api mode when the
// decision is cached: a SHA-256 of the credential and an LRU lookup.
func BenchmarkAuthorizeCached(b *testing.B) {
	m, err := memapi.New(memapi.WithToken(serviceToken), memapi.WithUsers([]memapi.User{{Token: aliceToken, Name: "alice", Projects: []string{"p"}}}))
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	b.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	p := "p"
	s, err := m.Sessions().CreateSession(context.Background(), &ambientv1.CreateSessionRequest{Name: "s", ProjectId: &p})
	if err != nil {
		b.Fatal(err)
	}
	z, err := NewAPI(APIConfig{URL: u}, Config{CacheTTL: time.Hour, CacheSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	req := Request{SessionID: s.GetMetadata().GetId(), Verb: VerbGet, Authorization: "Bearer " + aliceToken}
	if err := z.Authorize(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := z.Authorize(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
