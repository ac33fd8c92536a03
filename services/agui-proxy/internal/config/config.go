// Package config reads the agui-proxy configuration from the environment.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/authz"
)

// Environment variables, each beside the field it fills.
const (
	EnvListenAddr        = "LOCAL_PROXY_ADDR"
	EnvNATSName          = "NATS_CLIENT_NAME"
	EnvRunnersBucket     = "RUNNERS_BUCKET"
	EnvRoutesStaleAfter  = "ROUTES_STALE_AFTER"
	EnvCORSOrigins       = "CORS_ALLOWED_ORIGIN"
	EnvAuth              = "AGUI_AUTH"
	EnvAuthInsecure      = "AGUI_AUTH_ALLOW_INSECURE"
	EnvTokensFile        = "AGUI_TOKENS_FILE"
	EnvTokensReload      = "AGUI_TOKENS_RELOAD"
	EnvJWKSURL           = "AGUI_JWKS_URL"
	EnvJWTIssuer         = "AGUI_JWT_ISSUER"
	EnvJWTAudience       = "AGUI_JWT_AUDIENCE"
	EnvJWTUsernameClaim  = "AGUI_JWT_USERNAME_CLAIM"
	EnvJWTGroupsClaim    = "AGUI_JWT_GROUPS_CLAIM"
	EnvAuthz             = "AGUI_AUTHZ"
	EnvAuthzInsecure     = "AGUI_AUTHZ_ALLOW_INSECURE"
	EnvAuthzTimeout      = "AGUI_AUTHZ_TIMEOUT"
	EnvAuthzCacheTTL     = "AGUI_AUTHZ_CACHE_TTL"
	EnvAuthzCacheSize    = "AGUI_AUTHZ_CACHE_SIZE"
	EnvAPIURL            = "AMBIENT_API_SERVER_URL"
	EnvKubeconfig        = "KUBECONFIG"
	EnvNamespace         = "NAMESPACE"
	EnvInstance          = "CONTROL_PLANE_INSTANCE"
	EnvRunnerNetworks    = "RUNNER_ALLOWED_NETWORKS"
	EnvStreamWrite       = "STREAM_WRITE_TIMEOUT"
	EnvDetachedRun       = "DETACHED_RUN_TIMEOUT"
	EnvMaxBodyBytes      = "MAX_BODY_BYTES"
	EnvSSEKeepAlive      = "SSE_KEEPALIVE"
	EnvReadHeaderTimeout = "HTTP_READ_HEADER_TIMEOUT"
	EnvReadTimeout       = "HTTP_READ_TIMEOUT"
	EnvWriteTimeout      = "HTTP_WRITE_TIMEOUT"
	EnvIdleTimeout       = "HTTP_IDLE_TIMEOUT"
	EnvUpstreamDial      = "UPSTREAM_DIAL_TIMEOUT"
	EnvUpstreamHeader    = "UPSTREAM_HEADER_TIMEOUT"
	EnvUpstreamTimeout   = "UPSTREAM_TIMEOUT"
	EnvShutdownTimeout   = "SHUTDOWN_TIMEOUT"
	EnvShutdownDelay     = "SHUTDOWN_DELAY"
)

// minRoutesStaleAfter is the least ROUTES_STALE_AFTER (see validate).
const minRoutesStaleAfter = time.Second

// Config is the whole agui-proxy configuration. Pass it by value.
type Config struct {
	// Config holds NATS (its client name from NATS_CLIENT_NAME), LOG_LEVEL,
	// METRICS_ADDR (/healthz, /readyz, /metrics) and the OTLP endpoint.
	service.Config
	// ListenAddr serves the proxy (LOCAL_PROXY_ADDR).
	ListenAddr string
	// RunnersBucket is the KV bucket of runner endpoints (RUNNERS_BUCKET).
	RunnersBucket string
	// RoutesStaleAfter is how long the routing table may go without
	// being confirmed current before the proxy stops routing and reports
	// not ready (registry.WithStaleAfter). It must stay below
	// runner-manager's PORT_REUSE_DELAY.
	RoutesStaleAfter time.Duration
	// CORSOrigins are the allowed browser origins; "*" allows any origin
	// (without credentials).
	CORSOrigins []string
	// Auth is one of auth.ModeNone, auth.ModeToken, auth.ModeJWT.
	Auth string
	// AuthAllowInsecure permits Auth none on a non-loopback ListenAddr.
	AuthAllowInsecure bool
	TokensFile        string
	// TokensReload is how often the tokens file is re-read (0: never).
	TokensReload time.Duration
	JWKSURL      *url.URL
	JWTIssuer    string
	JWTAudience  string
	// JWTUsernameClaim and JWTGroupsClaim name the claims of the principal's
	// user name and groups (what a SubjectAccessReview asks about).
	JWTUsernameClaim string
	JWTGroupsClaim   string
	// Authz is one of authz.ModeNone, authz.ModeAPI, authz.ModeKube: who
	// decides whether a caller may reach a session.
	Authz string
	// AuthzAllowInsecure permits Authz none on a non-loopback ListenAddr.
	AuthzAllowInsecure bool
	// AuthzTimeout bounds one question to the authority.
	AuthzTimeout time.Duration
	// AuthzCacheTTL is how long a decision is reused (0: never);
	// AuthzCacheSize bounds the cached decisions.
	AuthzCacheTTL  time.Duration
	AuthzCacheSize int
	// APIURL is the ambient API's REST base URL (mode api).
	APIURL *url.URL
	// Kubeconfig is the kubeconfig file (mode kube); empty: in-cluster.
	Kubeconfig string
	// Namespace holds the AgenticSessions of sessions without a project
	// (kube-reconciler's NAMESPACE; mode kube).
	Namespace string
	// Instance is this installation (kube-reconciler's
	// CONTROL_PLANE_INSTANCE; mode kube): only a project namespace labelled
	// ambient-code.io/instance with it, or not labelled with any, is asked
	// about, never another installation's on the same cluster.
	Instance string
	// RunnerNetworks are the networks runner endpoints may be in.
	RunnerNetworks []netip.Prefix
	// StreamWriteTimeout bounds each write to a streaming client.
	StreamWriteTimeout time.Duration
	// DetachedRunTimeout bounds a run of the platform backend's run path,
	// which the proxy drains itself (proxy.Config.DetachedRunTimeout).
	DetachedRunTimeout time.Duration
	// MaxBodyBytes bounds request bodies (413 beyond).
	MaxBodyBytes int64
	// SSEKeepAlive is the idle interval of ": ping" comments; 0 disables.
	SSEKeepAlive time.Duration
	// Server timeouts. Streaming routes clear ReadTimeout and WriteTimeout
	// once the request body is read; ReadHeaderTimeout stops slowloris.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// Runner call timeouts; UpstreamTimeout covers non-streaming calls only.
	UpstreamDialTimeout   time.Duration
	UpstreamHeaderTimeout time.Duration
	UpstreamTimeout       time.Duration
	// ShutdownTimeout bounds the graceful stop; open streams end at once.
	ShutdownTimeout time.Duration
	// ShutdownDelay keeps the proxy accepting new connections this long
	// after the stop signal, before ShutdownTimeout starts: a terminating
	// pod still gets connections until kube-proxy and load balancers saw
	// it leave the Service's endpoints (0: close at once, for the dev
	// stack and compose).
	ShutdownDelay time.Duration
}

// Defaults returns the configuration used for every unset variable.
func Defaults() Config {
	return Config{
		Config: service.Config{
			NATS:        bus.ConnectConfig{URL: bus.DefaultURL, Name: "agui-proxy"},
			LogLevel:    service.DefaultLogLevel,
			MetricsAddr: "127.0.0.1:9091",
		},
		ListenAddr:            "127.0.0.1:9080",
		RunnersBucket:         bus.BucketRunners,
		RoutesStaleAfter:      10 * time.Second,
		CORSOrigins:           []string{"http://localhost:3000"},
		Auth:                  auth.ModeNone,
		JWTUsernameClaim:      "sub",
		JWTGroupsClaim:        "groups",
		Authz:                 authz.ModeNone,
		AuthzTimeout:          5 * time.Second,
		AuthzCacheTTL:         10 * time.Second,
		AuthzCacheSize:        10000,
		APIURL:                &url.URL{Scheme: "http", Host: "localhost:8000"},
		Namespace:             "ambient-code",
		Instance:              "default",
		RunnerNetworks:        []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		StreamWriteTimeout:    30 * time.Second,
		DetachedRunTimeout:    4 * time.Hour,
		TokensReload:          30 * time.Second,
		MaxBodyBytes:          8 << 20,
		SSEKeepAlive:          15 * time.Second,
		ReadHeaderTimeout:     10 * time.Second,
		ReadTimeout:           60 * time.Second,
		WriteTimeout:          60 * time.Second,
		IdleTimeout:           120 * time.Second,
		UpstreamDialTimeout:   5 * time.Second,
		UpstreamHeaderTimeout: 60 * time.Second,
		UpstreamTimeout:       30 * time.Second,
		ShutdownTimeout:       25 * time.Second,
	}
}

// FromEnv reads the configuration through lookup (nil: the process
// environment) and returns every problem at once; each names its variable.
func FromEnv(lookup envconfig.LookupFunc) (Config, error) {
	d := Defaults()
	l := envconfig.New(lookup)
	c := Config{
		Config:                service.LoadConfig(l, d.Config),
		ListenAddr:            l.HostPort(EnvListenAddr, d.ListenAddr),
		RunnersBucket:         l.String(EnvRunnersBucket, d.RunnersBucket),
		RoutesStaleAfter:      l.Duration(EnvRoutesStaleAfter, d.RoutesStaleAfter),
		CORSOrigins:           l.List(EnvCORSOrigins, d.CORSOrigins),
		Auth:                  l.Enum(EnvAuth, d.Auth, auth.ModeNone, auth.ModeToken, auth.ModeJWT),
		AuthAllowInsecure:     l.Bool(EnvAuthInsecure, false),
		TokensFile:            l.File(EnvTokensFile, ""),
		TokensReload:          l.Duration(EnvTokensReload, d.TokensReload),
		JWKSURL:               l.URL(EnvJWKSURL, "", "https", "http"),
		JWTIssuer:             l.String(EnvJWTIssuer, ""),
		JWTAudience:           l.String(EnvJWTAudience, ""),
		JWTUsernameClaim:      l.String(EnvJWTUsernameClaim, d.JWTUsernameClaim),
		JWTGroupsClaim:        l.String(EnvJWTGroupsClaim, d.JWTGroupsClaim),
		Authz:                 l.Enum(EnvAuthz, d.Authz, authz.ModeNone, authz.ModeAPI, authz.ModeKube),
		AuthzAllowInsecure:    l.Bool(EnvAuthzInsecure, false),
		AuthzTimeout:          l.Duration(EnvAuthzTimeout, d.AuthzTimeout),
		AuthzCacheTTL:         l.Duration(EnvAuthzCacheTTL, d.AuthzCacheTTL),
		AuthzCacheSize:        l.Int(EnvAuthzCacheSize, d.AuthzCacheSize, 1, 10_000_000),
		APIURL:                l.URL(EnvAPIURL, d.APIURL.String(), "http", "https"),
		Namespace:             l.String(EnvNamespace, d.Namespace),
		Instance:              l.String(EnvInstance, d.Instance),
		RunnerNetworks:        networks(l, EnvRunnerNetworks, d.RunnerNetworks),
		StreamWriteTimeout:    l.Duration(EnvStreamWrite, d.StreamWriteTimeout),
		DetachedRunTimeout:    l.Duration(EnvDetachedRun, d.DetachedRunTimeout),
		MaxBodyBytes:          int64(l.Int(EnvMaxBodyBytes, int(d.MaxBodyBytes), 1, 1<<30)),
		SSEKeepAlive:          l.Duration(EnvSSEKeepAlive, d.SSEKeepAlive),
		ReadHeaderTimeout:     l.Duration(EnvReadHeaderTimeout, d.ReadHeaderTimeout),
		ReadTimeout:           l.Duration(EnvReadTimeout, d.ReadTimeout),
		WriteTimeout:          l.Duration(EnvWriteTimeout, d.WriteTimeout),
		IdleTimeout:           l.Duration(EnvIdleTimeout, d.IdleTimeout),
		UpstreamDialTimeout:   l.Duration(EnvUpstreamDial, d.UpstreamDialTimeout),
		UpstreamHeaderTimeout: l.Duration(EnvUpstreamHeader, d.UpstreamHeaderTimeout),
		UpstreamTimeout:       l.Duration(EnvUpstreamTimeout, d.UpstreamTimeout),
		ShutdownTimeout:       l.Duration(EnvShutdownTimeout, d.ShutdownTimeout),
		ShutdownDelay:         l.Duration(EnvShutdownDelay, d.ShutdownDelay),
	}
	c.NATS.Name = l.String(EnvNATSName, d.NATS.Name)
	if c.Authz == authz.ModeKube {
		// Read only where it is used: `make run` passes the developer's
		// shell environment on, and a KUBECONFIG of several files
		// ("a:b", which clientcmd merges) or of a file since removed
		// must not stop a proxy that never talks to Kubernetes.
		c.Kubeconfig = l.File(EnvKubeconfig, "")
	}
	errs := []error{l.Err()}
	errs = append(errs, c.validate()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// validate checks rules that span variables; each error names one variable.
func (c Config) validate() []error {
	var errs []error
	bad := func(name, want, got string) {
		errs = append(errs, &envconfig.VarError{Name: name, Want: want, Got: got})
	}
	missing := func(name, want string) {
		errs = append(errs, &envconfig.VarError{Name: name, Want: want, Missing: true})
	}
	switch c.Auth {
	case auth.ModeNone:
		if !IsLoopback(c.ListenAddr) && !c.AuthAllowInsecure {
			bad(EnvAuth, fmt.Sprintf("token or jwt when %s is not a loopback address (%s=true overrides)",
				EnvListenAddr, EnvAuthInsecure), c.Auth)
		}
	case auth.ModeToken:
		if c.TokensFile == "" {
			missing(EnvTokensFile, "a bearer tokens file when "+EnvAuth+"=token")
		}
	case auth.ModeJWT:
		if c.JWKSURL == nil {
			missing(EnvJWKSURL, "the JWKS URL when "+EnvAuth+"=jwt")
		} else if c.JWKSURL.Scheme != "https" && !IsLoopbackHost(c.JWKSURL.Hostname()) {
			// Keys fetched over plain http can be swapped on the way, and
			// then any token verifies.
			bad(EnvJWKSURL, "an https URL (http only for a loopback host)", c.JWKSURL.Redacted())
		}
		if c.JWTIssuer == "" {
			missing(EnvJWTIssuer, "the token issuer when "+EnvAuth+"=jwt")
		}
		if c.JWTAudience == "" {
			missing(EnvJWTAudience, "the token audience when "+EnvAuth+"=jwt")
		}
	}
	switch c.Authz {
	case authz.ModeNone:
		if !IsLoopback(c.ListenAddr) && !c.AuthzAllowInsecure {
			bad(EnvAuthz, fmt.Sprintf("api or kube when %s is not a loopback address (%s=true lets every authenticated caller reach every session)",
				EnvListenAddr, EnvAuthzInsecure), c.Authz)
		}
	case authz.ModeAPI:
		if c.APIURL == nil {
			missing(EnvAPIURL, "the ambient API's REST URL when "+EnvAuthz+"=api")
		}
	case authz.ModeKube:
		if c.Auth != auth.ModeJWT {
			bad(EnvAuthz, fmt.Sprintf("kube only with %s=jwt (a user and groups to review)", EnvAuth), c.Authz)
		}
	}
	// None of these means "no limit" at zero: the proxy would replace a
	// zero with its own default, silently running on another value.
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{EnvStreamWrite, c.StreamWriteTimeout},
		// Zero would let a run nobody watches drain for ever.
		{EnvDetachedRun, c.DetachedRunTimeout},
		{EnvAuthzTimeout, c.AuthzTimeout},
		{EnvUpstreamDial, c.UpstreamDialTimeout},
		{EnvUpstreamHeader, c.UpstreamHeaderTimeout},
		{EnvUpstreamTimeout, c.UpstreamTimeout},
		// net/http reads zero as no limit: headers could trickle in
		// forever (slowloris).
		{EnvReadHeaderTimeout, c.ReadHeaderTimeout},
		// Zero would end every open stream at the first signal, with
		// no drain at all.
		{EnvShutdownTimeout, c.ShutdownTimeout},
	} {
		if d.value <= 0 {
			bad(d.name, "a positive duration", d.value.String())
		}
	}
	for _, o := range c.CORSOrigins {
		if !validOrigin(o) {
			bad(EnvCORSOrigins, `comma-separated origins "scheme://host[:port]" or "*"`, strings.Join(c.CORSOrigins, ","))
			break
		}
	}
	// kube-reconciler refuses the same value: a namespace that can't exist
	// would have every review of a session without a project denied, the
	// sessions unreachable with nothing in the logs at start. Only kube
	// mode uses it, and only there is it checked: `make run` passes the
	// developer's shell environment on, where NAMESPACE may mean anything.
	if c.Authz == authz.ModeKube {
		if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
			bad(EnvNamespace, "a namespace name (RFC 1123 label)", c.Namespace)
		}
		// kube-reconciler refuses the same values: accepted here, no
		// namespace of its would match, and every project's sessions
		// would be denied with nothing in the logs at start. Checked in
		// kube mode only, like NAMESPACE.
		if errs := validation.IsValidLabelValue(c.Instance); len(errs) > 0 || c.Instance == "" {
			bad(EnvInstance, "a non-empty label value (63 characters of letters, digits, '-', '_', '.')", c.Instance)
		}
	}
	// Below a second the heartbeat (a quarter of the bound) would ask the
	// server more often than a loaded one answers, and the table would
	// flap stale. Zero must not mean "never stale": that is the hazard
	// the bound is for.
	if c.RoutesStaleAfter < minRoutesStaleAfter {
		bad(EnvRoutesStaleAfter, "a duration of at least "+minRoutesStaleAfter.String(), c.RoutesStaleAfter.String())
	}
	switch {
	case c.RunnersBucket == "":
		missing(EnvRunnersBucket, "a KV bucket name")
	case !group.ValidName(c.RunnersBucket):
		// JetStream refuses any other name on every open, and the proxy
		// would wait for the bucket, unready, forever.
		bad(EnvRunnersBucket, `a KV bucket name of letters, digits, "-" and "_", starting with a letter or digit`, c.RunnersBucket)
	}
	return errs
}

// CORSAllowsAny reports whether CORS_ALLOWED_ORIGIN contains "*".
func (c Config) CORSAllowsAny() bool {
	for _, o := range c.CORSOrigins {
		if o == "*" {
			return true
		}
	}
	return false
}

// LogValue hides nothing secret (secrets are not in Config as plain text
// except NATS credentials, which are summarised by bus.ConnectConfig).
func (c Config) LogValue() slog.Value {
	jwks, api := "", ""
	if c.JWKSURL != nil {
		jwks = c.JWKSURL.Redacted()
	}
	if c.APIURL != nil {
		api = c.APIURL.Redacted()
	}
	nets := make([]string, len(c.RunnerNetworks))
	for i, p := range c.RunnerNetworks {
		nets[i] = p.String()
	}
	return slog.GroupValue(
		slog.String("listen_addr", c.ListenAddr),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.Any("nats", c.NATS),
		slog.String("runners_bucket", c.RunnersBucket),
		slog.Duration("routes_stale_after", c.RoutesStaleAfter),
		slog.Any("cors_origins", c.CORSOrigins),
		slog.String("auth", c.Auth),
		slog.String("jwks_url", jwks),
		slog.String("authz", c.Authz),
		slog.String("instance", c.Instance),
		slog.String("api_url", api),
		slog.Any("runner_networks", nets),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.Duration("sse_keepalive", c.SSEKeepAlive),
	)
}

// IsLoopback reports whether a listen address "host:port" only accepts
// connections from this machine. An empty host (all interfaces) or a host
// name other than "localhost" is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return IsLoopbackHost(host)
}

// IsLoopbackHost reports whether a URL host name only reaches this machine.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// networks reads comma-separated CIDRs (a bare address is its own /32 or
// /128), or def when the variable is unset or empty. Two forms that parse
// are refused, because they would not mean what was written:
//   - bits set beyond the prefix length (10.244.1.17/16): masked, the
//     single address meant would become a whole /16 (the kube-apiserver
//     refuses such a NetworkPolicy ipBlock for the same reason);
//   - an IPv4-mapped IPv6 network (::ffff:10.0.0.0/104): runner addresses
//     are compared as IPv4 (allowedAddr unmaps them), so it would match
//     nothing.
func networks(l *envconfig.Loader, name string, def []netip.Prefix) []netip.Prefix {
	items := l.List(name, nil)
	if items == nil {
		return def
	}
	const want = "comma-separated CIDRs such as 127.0.0.0/8,10.244.0.0/16"
	out := make([]netip.Prefix, 0, len(items))
	for _, it := range items {
		p, err := netip.ParsePrefix(it)
		if err != nil {
			a, aerr := netip.ParseAddr(it)
			if aerr != nil {
				l.Invalid(name, want, strings.Join(items, ","), err)
				return def
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err := checkNetwork(it, p); err != nil {
			l.Invalid(name, want, strings.Join(items, ","), err)
			return def
		}
		out = append(out, p)
	}
	return out
}

// checkNetwork refuses a network p (written as raw) that would match other
// addresses than written: see networks.
func checkNetwork(raw string, p netip.Prefix) error {
	a := p.Addr()
	if a.Is4In6() {
		v4 := netip.PrefixFrom(a.Unmap(), max(p.Bits()-96, 0)).Masked()
		return fmt.Errorf("%q is an IPv4-mapped IPv6 network, which no runner address matches (they are compared as IPv4): write the IPv4 network, %s", raw, v4)
	}
	if m := p.Masked(); m != p {
		return fmt.Errorf("%q has bits set beyond its /%d prefix: write the network, %s, or the single address, %s", raw, p.Bits(), m, netip.PrefixFrom(a, a.BitLen()))
	}
	return nil
}

func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}
