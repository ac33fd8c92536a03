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

// Verifier checks the credentials of a request and returns the principal
// (a token label or the JWT subject) for logs. It returns an error wrapping
// ErrUnauthenticated for missing or wrong credentials.
type Verifier interface {
	Verify(ctx context.Context, r *http.Request) (string, error)
}

// principalKey is the context key of the authenticated principal.
type principalKey struct{}

// Principal returns the principal authenticated for ctx, if any.
func Principal(ctx context.Context) (string, bool) {
	p, ok := ctx.Value(principalKey{}).(string)
	return p, ok
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
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		})
	}
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
