// Package auth authenticates AG-UI clients of the proxy: static bearer tokens
// (compared in constant time) or JWTs verified against a JWKS URL with a
// fixed issuer and audience. Failures are answered with 401 and a JSON body.
package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// Modes of AGUI_AUTH.
const (
	ModeNone  = "none"
	ModeToken = "token"
	ModeJWT   = "jwt"
)

// ErrUnauthenticated is returned by a Verifier for a request without valid
// credentials. Its detail is logged, never sent to the client.
var ErrUnauthenticated = errors.New("unauthenticated")

// Principal is who a request was authenticated as.
type Principal struct {
	// Name is a token label ("token#2") or the JWT's user name claim.
	Name string
	// Groups are the JWT's groups claim (none for static tokens). With
	// AGUI_AUTHZ=kube they go into SubjectAccessReviews, so they must name
	// the groups of the projects' group_access entries.
	Groups []string
}

// Verifier checks the credentials of a request and returns the principal.
// It returns an error wrapping ErrUnauthenticated for missing or wrong
// credentials.
type Verifier interface {
	Verify(ctx context.Context, r *http.Request) (Principal, error)
}

// principalKey is the context key of the authenticated principal.
type principalKey struct{}

// PrincipalFrom returns the principal authenticated for ctx, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p, as Middleware does.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// Middleware returns chi-style middleware answering 401 for requests v does
// not accept. OPTIONS requests pass untouched: browsers send CORS preflights
// without credentials, and the CORS handler answers them before this one.
func Middleware(v Verifier, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodOptions {
				next.ServeHTTP(w, r)
				return
			}
			p, err := v.Verify(r.Context(), r)
			if err != nil {
				log.Debug("request not authenticated", slog.String("path", r.URL.Path), slog.Any(logkey.Err, err))
				w.Header().Set("WWW-Authenticate", `Bearer realm="agui-proxy"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				// A failed write means the client is gone.
				_, _ = w.Write([]byte(`{"error":"unauthorized"}` + "\n"))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
		})
	}
}

// Bearer returns the token of an "Authorization: Bearer <token>" header.
func Bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
