package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/ambient-code/control-plane/libs/logkey"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
)

// Modes of AGUI_AUTHZ.
const (
	ModeNone = "none"
	ModeAPI  = "api"
	ModeKube = "kube"
)

// Verbs of a request on a session, as Kubernetes RBAC names them.
const (
	// VerbGet reads: streams opened with GET, health and status routes.
	VerbGet = "get"
	// VerbUpdate acts on the session: runs and interrupts (POST).
	VerbUpdate = "update"
)

// VerbOf returns the verb a request with method needs: get for GET (and
// HEAD), update for everything else.
func VerbOf(method string) string {
	if method == http.MethodGet || method == http.MethodHead {
		return VerbGet
	}
	return VerbUpdate
}

// Request is one question: may this caller do Verb on session SessionID?
type Request struct {
	SessionID string
	// ProjectID is the session's project from its routing record; kube
	// mode finds the namespace by it.
	ProjectID string
	Verb      string
	// Principal is who the proxy authenticated (kube mode asks about it).
	Principal auth.Principal
	// Authorization is the caller's Authorization header, forwarded as is
	// in api mode. Never logged, never stored.
	Authorization string
}

// Decision is an authority's answer.
type Decision struct {
	Allowed bool
	// Reason says why a request was denied; it is shown to the caller.
	Reason string
}

// authority asks one authority. decide returns ErrUnauthenticated or an
// error wrapping ErrUnavailable when it has no answer. key returns what
// identifies the question for the cache besides the session: two requests
// with the same key get the same answer.
type authority interface {
	decide(ctx context.Context, req Request) (Decision, error)
	key(req Request) []byte
}

// Config tunes an Authorizer.
type Config struct {
	// CacheTTL is how long a decision is reused; 0 disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the cached decisions (least recently used go first).
	// Required when CacheTTL > 0.
	CacheSize int
	// Timeout bounds one question to the authority (default 5s).
	Timeout time.Duration
	// MeterProvider defaults to a no-op.
	MeterProvider metric.MeterProvider
	// Log defaults to discarding.
	Log *slog.Logger
}

// cacheKey identifies a cached decision; the digest hides the credentials.
type cacheKey struct {
	session string
	digest  [sha256.Size]byte
}

type cached struct {
	d       Decision
	expires time.Time
}

// Authorizer answers Authorize from the cache or its authority. Safe for
// concurrent use.
type Authorizer struct {
	mode    string
	auth    authority
	ttl     time.Duration
	timeout time.Duration
	cache   *lru.Cache[cacheKey, cached] // nil when ttl is 0; LRU only, expiry checked on read
	metrics *metrics
	log     *slog.Logger
	now     func() time.Time
}

func newAuthorizer(mode string, a authority, cfg Config) (*Authorizer, error) {
	if cfg.CacheTTL < 0 || (cfg.CacheTTL > 0 && cfg.CacheSize < 1) {
		return nil, fmt.Errorf("%w: cache ttl %s, size %d", ErrInvalidConfig, cfg.CacheTTL, cfg.CacheSize)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = metricnoop.NewMeterProvider()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	z := &Authorizer{mode: mode, auth: a, ttl: cfg.CacheTTL, timeout: cfg.Timeout, metrics: m, log: cfg.Log, now: time.Now}
	if cfg.CacheTTL > 0 {
		// lru.New fails only for a size < 1, checked above.
		if z.cache, err = lru.New[cacheKey, cached](cfg.CacheSize); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return z, nil
}

// Mode returns ModeAPI or ModeKube.
func (z *Authorizer) Mode() string { return z.mode }

// Authorize returns nil when the authority allows req, else an *Error: 403
// for a denial, 401 when the authority did not accept the credentials, 503
// when it could not be asked. Denials and errors are logged here.
func (z *Authorizer) Authorize(ctx context.Context, req Request) error {
	k := cacheKey{session: req.SessionID, digest: sha256.Sum256(z.auth.key(req))}
	d, hit := z.lookup(k)
	if !hit {
		start := z.now()
		actx, cancel := context.WithTimeout(ctx, z.timeout)
		var err error
		d, err = z.auth.decide(actx, req)
		cancel()
		z.metrics.latency(ctx, z.mode, z.now().Sub(start))
		if err != nil {
			return z.failed(ctx, req, err)
		}
		z.store(k, d)
	}
	z.metrics.decision(ctx, z.mode, d.Allowed, hit)
	if d.Allowed {
		return nil
	}
	z.log.Info("session access denied", slog.String(logkey.SessionID, req.SessionID),
		slog.String("principal", req.Principal.Name), slog.String("verb", req.Verb), slog.String(logkey.Reason, d.Reason),
		slog.Bool("cached", hit))
	return &Error{Code: http.StatusForbidden, Reason: d.Reason}
}

func (z *Authorizer) failed(ctx context.Context, req Request, err error) error {
	if ctx.Err() != nil {
		// The caller left; the answer goes nowhere and is no failure.
		return &Error{Code: http.StatusServiceUnavailable, Reason: "request cancelled", Err: ctx.Err()}
	}
	if errors.Is(err, ErrUnauthenticated) {
		z.metrics.result(ctx, z.mode, resultUnauthenticated)
		z.log.Info("authority refused the credentials", slog.String(logkey.SessionID, req.SessionID))
		return &Error{Code: http.StatusUnauthorized, Reason: "the " + z.mode + " authority did not accept the credentials", Err: err}
	}
	z.metrics.result(ctx, z.mode, resultError)
	z.log.Warn("authorization failed", slog.String(logkey.SessionID, req.SessionID), slog.Any(logkey.Err, err))
	return &Error{Code: http.StatusServiceUnavailable, Reason: "the " + z.mode + " authority could not be asked", Err: err}
}

func (z *Authorizer) lookup(k cacheKey) (Decision, bool) {
	if z.cache == nil {
		return Decision{}, false
	}
	c, ok := z.cache.Get(k)
	if !ok {
		return Decision{}, false
	}
	if !z.now().Before(c.expires) {
		z.cache.Remove(k)
		return Decision{}, false
	}
	return c.d, true
}

func (z *Authorizer) store(k cacheKey, d Decision) {
	if z.cache == nil {
		return
	}
	z.cache.Add(k, cached{d: d, expires: z.now().Add(z.ttl)})
}

// Forget drops every cached decision about a session: its routing record
// was deleted or replaced, so a later session under the same id is decided
// afresh. The cost is one pass over the cache, paid only on such changes.
func (z *Authorizer) Forget(sessionID string) {
	if z.cache == nil {
		return
	}
	for _, k := range z.cache.Keys() {
		if k.session == sessionID {
			z.cache.Remove(k)
		}
	}
}

// Cached returns the number of cached decisions (expired ones included
// until they are read or evicted).
func (z *Authorizer) Cached() int {
	if z.cache == nil {
		return 0
	}
	return z.cache.Len()
}
