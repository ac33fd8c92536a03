package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ambient-code/control-plane/libs/envconfig"
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
	// UsernameClaim names the claim holding the principal's user name
	// (default "sub"); GroupsClaim the claim holding its groups, a string
	// or a list of strings (default "groups"; absent means no groups).
	UsernameClaim string
	GroupsClaim   string
	// RefreshInterval defaults to one hour.
	RefreshInterval time.Duration
	// Leeway allows for clock skew on exp/nbf/iat (default 30s).
	Leeway time.Duration
	// HTTPClient fetches the JWKS (default: a client with a 10s timeout).
	HTTPClient *http.Client
}

// JWT verifies bearer JWTs. Safe for concurrent use.
type JWT struct {
	kf       keyfunc.Keyfunc
	parser   *jwt.Parser
	username string
	groups   string
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
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "sub"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
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
				log.Warn("jwks refresh", slog.String("url", envconfig.RedactURLs(u)), slog.Any(logkey.Err, redactErr(err, u)))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwt: jwks %s: %w", envconfig.RedactURLs(cfg.JWKSURL), redactErr(err, cfg.JWKSURL))
	}
	return &JWT{
		kf:       kf,
		username: cfg.UsernameClaim,
		groups:   cfg.GroupsClaim,
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

// redactErr returns err with the credentials of the JWKS URL raw taken out
// of its text, as envconfig.RedactURLs takes them out of the URL: keyfunc's
// errors quote the URL as given (so do net/url's parse errors), and
// net/http's keep its user name (only a password is starred), which is all
// the secret of a token-only URL. The text is all that is left: nothing
// reads these errors but a log.
func redactErr(err error, raw string) error {
	if err == nil || !strings.Contains(raw, "@") {
		return err
	}
	redacted := envconfig.RedactURLs(raw)
	msg := strings.ReplaceAll(err.Error(), raw, redacted)
	u, uerr := url.Parse(raw)
	r, rerr := url.Parse(redacted)
	if uerr == nil && rerr == nil && u.User != nil && r.User != nil {
		msg = strings.ReplaceAll(msg, u.User.String()+"@", r.User.String()+"@")
	}
	return errors.New(msg)
}

// Verify accepts a request with a bearer JWT signed by a key of the JWKS,
// unexpired, with the configured issuer and audience. The principal's name
// is the username claim, which must be a non-empty string; its groups come
// from the groups claim.
func (j *JWT) Verify(ctx context.Context, r *http.Request) (Principal, error) {
	raw, ok := Bearer(r)
	if !ok {
		return Principal{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	claims := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(raw, claims, j.kf.KeyfuncCtx(ctx)); err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	name, _ := claims[j.username].(string)
	if name == "" {
		return Principal{}, fmt.Errorf("%w: claim %q is not a non-empty string", ErrUnauthenticated, j.username)
	}
	groups, err := stringList(claims[j.groups])
	if err != nil {
		return Principal{}, fmt.Errorf("%w: claim %q: %w", ErrUnauthenticated, j.groups, err)
	}
	return Principal{Name: name, Groups: groups}, nil
}

// stringList reads a groups claim: absent, one string, or a list of
// strings. Anything else is refused rather than read as "no groups": a
// misconfigured issuer then fails loudly at authentication instead of as
// puzzling denials.
func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("list item %T, want string", e)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%T, want a string or a list of strings", v)
	}
}
