// Package config reads the agui-proxy configuration from the environment.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/service"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
)

// Environment variables, each beside the field it fills.
const (
	EnvListenAddr        = "LOCAL_PROXY_ADDR"
	EnvNATSName          = "NATS_CLIENT_NAME"
	EnvRunnersBucket     = "RUNNERS_BUCKET"
	EnvCORSOrigins       = "CORS_ALLOWED_ORIGIN"
	EnvAuth              = "AGUI_AUTH"
	EnvAuthInsecure      = "AGUI_AUTH_ALLOW_INSECURE"
	EnvTokensFile        = "AGUI_TOKENS_FILE"
	EnvTokensReload      = "AGUI_TOKENS_RELOAD"
	EnvJWKSURL           = "AGUI_JWKS_URL"
	EnvJWTIssuer         = "AGUI_JWT_ISSUER"
	EnvJWTAudience       = "AGUI_JWT_AUDIENCE"
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
)

// Config is the whole agui-proxy configuration. Pass it by value.
type Config struct {
	// Config holds NATS (its client name from NATS_CLIENT_NAME), LOG_LEVEL,
	// METRICS_ADDR (/healthz, /readyz, /metrics) and the OTLP endpoint.
	service.Config
	// ListenAddr serves the proxy (LOCAL_PROXY_ADDR).
	ListenAddr string
	// RunnersBucket is the KV bucket of runner endpoints (RUNNERS_BUCKET).
	RunnersBucket string
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
		CORSOrigins:           []string{"http://localhost:3000"},
		Auth:                  auth.ModeNone,
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
		CORSOrigins:           l.List(EnvCORSOrigins, d.CORSOrigins),
		Auth:                  l.Enum(EnvAuth, d.Auth, auth.ModeNone, auth.ModeToken, auth.ModeJWT),
		AuthAllowInsecure:     l.Bool(EnvAuthInsecure, false),
		TokensFile:            l.File(EnvTokensFile, ""),
		TokensReload:          l.Duration(EnvTokensReload, d.TokensReload),
		JWKSURL:               l.URL(EnvJWKSURL, "", "https", "http"),
		JWTIssuer:             l.String(EnvJWTIssuer, ""),
		JWTAudience:           l.String(EnvJWTAudience, ""),
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
	}
	c.NATS.Name = l.String(EnvNATSName, d.NATS.Name)
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
		}
		if c.JWTIssuer == "" {
			missing(EnvJWTIssuer, "the token issuer when "+EnvAuth+"=jwt")
		}
		if c.JWTAudience == "" {
			missing(EnvJWTAudience, "the token audience when "+EnvAuth+"=jwt")
		}
	}
	for _, o := range c.CORSOrigins {
		if !validOrigin(o) {
			bad(EnvCORSOrigins, `comma-separated origins "scheme://host[:port]" or "*"`, strings.Join(c.CORSOrigins, ","))
			break
		}
	}
	if c.RunnersBucket == "" {
		missing(EnvRunnersBucket, "a KV bucket name")
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
	jwks := ""
	if c.JWKSURL != nil {
		jwks = c.JWKSURL.String()
	}
	return slog.GroupValue(
		slog.String("listen_addr", c.ListenAddr),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.Any("nats", c.NATS),
		slog.String("runners_bucket", c.RunnersBucket),
		slog.Any("cors_origins", c.CORSOrigins),
		slog.String("auth", c.Auth),
		slog.String("jwks_url", jwks),
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
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}
