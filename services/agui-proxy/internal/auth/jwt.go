package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// JWTConfig configures JWT verification.
type JWTConfig struct {
	// JWKSURL serves the issuer's signing keys; unknown key ids trigger a
	// (rate-limited) refresh, and the set is refreshed every RefreshInterval.
	JWKSURL string
	// Issuer and Audience must match the token's iss and aud claims.
	Issuer   string
	Audience string
	// RefreshInterval defaults to one hour.
	RefreshInterval time.Duration
	// Leeway allows for clock skew on exp/nbf/iat (default 30s).
	Leeway time.Duration
	// HTTPClient fetches the JWKS (default: a client with a 10s timeout).
	HTTPClient *http.Client
}

// JWT verifies bearer JWTs. Safe for concurrent use.
type JWT struct {
	kf     keyfunc.Keyfunc
	parser *jwt.Parser
}

var _ Verifier = (*JWT)(nil)

// signingMethods are the asymmetric algorithms accepted; "none" and HMAC
// (which would let a public key be used as a shared secret) never are.
func signingMethods() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// NewJWT starts fetching the JWKS; its refresh goroutine ends with ctx. A
// JWKS that cannot be fetched yet is not an error: tokens fail until it can.
func NewJWT(ctx context.Context, cfg JWTConfig, log *slog.Logger) (*JWT, error) {
	if cfg.JWKSURL == "" || cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("jwt: JWKS URL, issuer and audience are required")
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = time.Hour
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:          cfg.HTTPClient,
		HTTPTimeout:     10 * time.Second,
		RefreshInterval: cfg.RefreshInterval,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				log.Warn("jwks refresh", slog.String("url", u), slog.Any(logkey.Err, err))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwt: jwks %s: %w", cfg.JWKSURL, err)
	}
	return &JWT{
		kf: kf,
		parser: jwt.NewParser(
			jwt.WithValidMethods(signingMethods()),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(cfg.Leeway),
		),
	}, nil
}

// Verify accepts a request with a bearer JWT signed by a key of the JWKS,
// unexpired, with the configured issuer and audience. The principal is the
// token's subject.
func (j *JWT) Verify(ctx context.Context, r *http.Request) (string, error) {
	raw, ok := bearer(r)
	if !ok {
		return "", fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	var claims jwt.RegisteredClaims
	if _, err := j.parser.ParseWithClaims(raw, &claims, j.kf.KeyfuncCtx(ctx)); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return "jwt:" + claims.Subject, nil
}
