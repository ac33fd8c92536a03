package auth_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth/authtest"
)

const (
	tokenA = "aaaaaaaaaaaaaaaaaaaaaaaa-token-a"
	tokenB = "bbbbbbbbbbbbbbbbbbbbbbbb-token-b"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve runs one request through the middleware and returns status and body.
func serve(t *testing.T, v auth.Verifier, method, authz string) (int, string, string) {
	t.Helper()
	var principal string
	h := auth.Middleware(v, discard())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := auth.PrincipalFrom(r.Context()); ok {
			principal = p.Name
			if len(p.Groups) > 0 {
				principal += "|" + strings.Join(p.Groups, ",")
			}
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	req := httptest.NewRequest(method, "/sessions/s1/health", nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code == http.StatusUnauthorized {
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("401 Content-Type = %q, want application/json", ct)
		}
	}
	return rec.Code, strings.TrimSpace(rec.Body.String()), principal
}

func TestTokens(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("# ops\n"+tokenA+"\n\n  "+tokenB+"  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.LoadTokens(path)
	if err != nil {
		t.Fatalf("LoadTokens: %v", err)
	}
	if v.Len() != 2 {
		t.Fatalf("Len = %d, want 2", v.Len())
	}
	tests := []struct {
		name      string
		method    string
		authz     string
		code      int
		principal string
	}{
		{name: "no header", method: http.MethodGet, code: http.StatusUnauthorized},
		{name: "wrong token", method: http.MethodGet, authz: "Bearer " + strings.Repeat("x", 32), code: http.StatusUnauthorized},
		{name: "prefix of token", method: http.MethodGet, authz: "Bearer " + tokenA[:20], code: http.StatusUnauthorized},
		{name: "basic scheme", method: http.MethodGet, authz: "Basic " + tokenA, code: http.StatusUnauthorized},
		{name: "empty bearer", method: http.MethodGet, authz: "Bearer ", code: http.StatusUnauthorized},
		{name: "first token", method: http.MethodGet, authz: "Bearer " + tokenA, code: http.StatusTeapot, principal: "token#1"},
		{name: "second token lower-case scheme", method: http.MethodPost, authz: "bearer " + tokenB, code: http.StatusTeapot, principal: "token#2"},
		{name: "preflight passes", method: http.MethodOptions, code: http.StatusTeapot},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, body, principal := serve(t, v, tc.method, tc.authz)
			if code != tc.code {
				t.Fatalf("status = %d (%s), want %d", code, body, tc.code)
			}
			if code == http.StatusUnauthorized && body != `{"error":"unauthorized"}` {
				t.Fatalf("body = %s", body)
			}
			if principal != tc.principal {
				t.Fatalf("principal = %q, want %q", principal, tc.principal)
			}
		})
	}
}

func TestParseTokensRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
	}{
		{name: "empty", in: ""},
		{name: "only comments", in: "# a\n\n"},
		{name: "short", in: "short\n"},
		{name: "inner space", in: "aaaaaaaaaa bbbbbbbbbbbb\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := auth.ParseTokens(strings.NewReader(tc.in)); err == nil {
				t.Fatalf("ParseTokens(%q) = nil error", tc.in)
			}
		})
	}
}

func TestJWT(t *testing.T) {
	t.Parallel()
	iss := authtest.NewIssuer(t, "agui-proxy")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := auth.NewJWT(ctx, auth.JWTConfig{JWKSURL: iss.URL, Issuer: iss.Name, Audience: "agui-proxy"}, discard())
	if err != nil {
		t.Fatalf("NewJWT: %v", err)
	}
	expired := iss.Claims("alice")
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	wrongAud := iss.Claims("alice")
	wrongAud.Audience = jwt.ClaimStrings{"someone-else"}
	wrongIss := iss.Claims("alice")
	wrongIss.Issuer = "https://evil.test"
	noExp := iss.Claims("alice")
	noExp.ExpiresAt = nil
	unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, iss.Claims("alice")).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		authz     string
		code      int
		principal string
	}{
		{name: "valid", authz: "Bearer " + iss.Sign(t, iss.Claims("alice")), code: http.StatusTeapot, principal: "alice"},
		{name: "groups list", authz: "Bearer " + iss.Sign(t, iss.UserClaims("alice", "team-a", "team-b")), code: http.StatusTeapot, principal: "alice|team-a,team-b"},
		{name: "groups string", authz: "Bearer " + iss.Sign(t, withClaim(iss.UserClaims("alice"), "groups", "team-a")), code: http.StatusTeapot, principal: "alice|team-a"},
		{name: "groups malformed", authz: "Bearer " + iss.Sign(t, withClaim(iss.UserClaims("alice"), "groups", 7)), code: http.StatusUnauthorized},
		{name: "group not a string", authz: "Bearer " + iss.Sign(t, withClaim(iss.UserClaims("alice"), "groups", []any{"a", 1})), code: http.StatusUnauthorized},
		{name: "no subject", authz: "Bearer " + iss.Sign(t, withClaim(iss.UserClaims("alice"), "sub", "")), code: http.StatusUnauthorized},
		{name: "no token", code: http.StatusUnauthorized},
		{name: "garbage", authz: "Bearer not.a.jwt", code: http.StatusUnauthorized},
		{name: "expired", authz: "Bearer " + iss.Sign(t, expired), code: http.StatusUnauthorized},
		{name: "no exp", authz: "Bearer " + iss.Sign(t, noExp), code: http.StatusUnauthorized},
		{name: "wrong audience", authz: "Bearer " + iss.Sign(t, wrongAud), code: http.StatusUnauthorized},
		{name: "wrong issuer", authz: "Bearer " + iss.Sign(t, wrongIss), code: http.StatusUnauthorized},
		{name: "other key", authz: "Bearer " + iss.SignWithOtherKey(t, iss.Claims("alice")), code: http.StatusUnauthorized},
		{name: "alg none", authz: "Bearer " + unsigned, code: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, body, principal := serve(t, v, http.MethodGet, tc.authz)
			if code != tc.code {
				t.Fatalf("status = %d (%s), want %d", code, body, tc.code)
			}
			if principal != tc.principal {
				t.Fatalf("principal = %q, want %q", principal, tc.principal)
			}
		})
	}
}

// withClaim returns c with claim k set to v.
func withClaim(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	return c
}

// TestJWKSCredentialsNotLogged: a JWKS URL may carry credentials (user and
// password, or a token as the user). Neither the warning of a failed
// refresh (its url and err) nor the start-up error of a URL keyfunc cannot
// use shows them, as the configuration's own log line does not.
func TestJWKSCredentialsNotLogged(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-pw"
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	refused := testenv.FreeAddr(t) // nothing listens there
	for _, tc := range []struct{ name, url string }{
		{"server answers 500", "http://jwks-user:" + secret + "@" + failing.Listener.Addr().String() + "/jwks"},
		{"server refuses", "http://jwks-user:" + secret + "@" + refused + "/jwks"},
		{"token as the user", "http://" + secret + "@" + refused + "/jwks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf testenv.Buffer
			_, err := auth.NewJWT(t.Context(), auth.JWTConfig{JWKSURL: tc.url, Issuer: "https://issuer.test", Audience: "agui-proxy"},
				slog.New(slog.NewTextHandler(&buf, nil)))
			if err != nil {
				t.Fatalf("NewJWT: %v", err)
			}
			log := buf.String()
			if !strings.Contains(log, "jwks refresh") {
				t.Fatalf("no refresh warning logged, the test proves nothing: %s", log)
			}
			if strings.Contains(log, secret) {
				t.Errorf("refresh warning shows the JWKS credentials: %s", log)
			}
		})
	}
	_, err := auth.NewJWT(t.Context(), auth.JWTConfig{JWKSURL: "http://jwks-user:" + secret + "@127.0.0.1:notaport/jwks",
		Issuer: "https://issuer.test", Audience: "agui-proxy"}, discard())
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("NewJWT of a URL it cannot parse = %v; want an error without the JWKS credentials", err)
	}
}
