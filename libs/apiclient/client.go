package apiclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/ambient-code/control-plane/libs/apitrace"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/logkey"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Defaults applied by New for zero Config fields.
const (
	// DefaultKeepalive is the ping interval on a connection with open
	// calls (watch streams) and no traffic. The real server sets no
	// keepalive policy, so grpc-go's default applies: pings closer than
	// 5 min are strikes, and the third strike ends the connection (and
	// every watch on it) with GOAWAY "too_many_pings". An idle watch sees
	// no data frame that would clear the strikes, so the interval keeps a
	// margin over those 5 min for pings that arrive a little early.
	DefaultKeepalive = 5*time.Minute + 10*time.Second
	// DefaultKeepaliveTimeout is how long to wait for a ping ack before the
	// connection is considered dead.
	DefaultKeepaliveTimeout = 20 * time.Second
	// DefaultTimeout bounds unary calls whose ctx has no deadline.
	DefaultTimeout = 30 * time.Second
	// DefaultPageSize is the largest page size the server accepts; larger
	// sizes are clamped to 20 by the server.
	DefaultPageSize = 500
	// MaxRecvMsgSize is the largest response the client accepts.
	MaxRecvMsgSize = 256 << 20
	// DefaultReconnectMaxDelay caps the wait between two attempts to
	// connect to a server that refuses connections. grpc-go's own cap is
	// 120 s: after an API restart of a minute or two the client would
	// reconnect up to two minutes after the server was back, and every
	// call (and the informer's watch and health probe) would fail fast
	// meanwhile. At 5 s each client costs a down server one TCP connect
	// attempt per 5 s.
	DefaultReconnectMaxDelay = 5 * time.Second
)

// Config configures a Client.
type Config struct {
	// Addr is the gRPC server address (host:port or any grpc target).
	Addr string
	// Token is sent as "authorization: Bearer <Token>"; "" sends nothing.
	Token string
	// TokenFile, instead of Token, names a file holding the token (a
	// mounted Secret). New reads it; every call after checks it with one
	// stat and sends the new token once the file changed, so a rotated
	// Secret is used without a restart. A file that turns unusable keeps
	// the last good token in use and logs one warning to Logger
	// (envconfig.SecretFile).
	TokenFile string
	// UseTLS turns on TLS; CAFile (PEM) replaces the system roots when set.
	UseTLS bool
	CAFile string
	// Keepalive is the ping interval (0: DefaultKeepalive; grpc-go raises
	// anything below 10 s to 10 s).
	Keepalive time.Duration
	// Timeout bounds unary calls without a ctx deadline (0: DefaultTimeout).
	Timeout time.Duration
	// PageSize is the List page size (0: DefaultPageSize; 1..500).
	PageSize int32
	// ReconnectMaxDelay caps the backoff between connection attempts
	// (0: DefaultReconnectMaxDelay). The backoff starts at 1 s and grows
	// by 1.6 per failed attempt, ±20 % jitter, as grpc-go's default does.
	ReconnectMaxDelay time.Duration
	// DialOptions are appended to the client's own (tests).
	DialOptions []grpc.DialOption
	// Logger hears what the client works around on its own (a list page
	// over MaxRecvMsgSize asked for again in smaller pages); nil discards.
	Logger *slog.Logger
	// TracerProvider makes the span of every unary call, a child of the
	// call's ctx, tagged with the object it names (package apitrace); nil
	// uses the OTel global, which telemetry.Setup installs.
	TracerProvider trace.TracerProvider
}

// LogValue redacts the token so a Config can be logged.
func (c Config) LogValue() slog.Value {
	tok := ""
	if c.Token != "" {
		tok = "REDACTED"
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("token", tok),
		slog.String("token_file", c.TokenFile),
		slog.Bool("use_tls", c.UseTLS),
		slog.String("ca_file", c.CAFile),
		slog.Duration("keepalive", c.Keepalive),
		slog.Duration("timeout", c.Timeout),
		slog.Int("page_size", int(c.PageSize)),
	)
}

// Client is a connection to the ambient API. It is safe for concurrent use.
type Client struct {
	conn     *grpc.ClientConn
	sessions ambientv1.SessionServiceClient
	projects ambientv1.ProjectServiceClient
	settings ambientv1.ProjectSettingsServiceClient
	pageSize int32
	log      *slog.Logger
}

// New validates cfg and creates a Client without connecting (the connection
// is made on the first call). It returns an error wrapping ErrInvalidConfig
// for a bad Config, an unreadable CA file, or a TokenFile that holds no
// usable token.
func New(cfg Config) (*Client, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%w: empty Addr", ErrInvalidConfig)
	}
	if cfg.Token != "" && cfg.TokenFile != "" {
		return nil, fmt.Errorf("%w: both Token and TokenFile set (one of the two)", ErrInvalidConfig)
	}
	if cfg.Keepalive < 0 || cfg.Timeout < 0 || cfg.ReconnectMaxDelay < 0 {
		return nil, fmt.Errorf("%w: negative Keepalive, Timeout or ReconnectMaxDelay", ErrInvalidConfig)
	}
	if cfg.PageSize < 0 || cfg.PageSize > DefaultPageSize {
		return nil, fmt.Errorf("%w: PageSize %d not in 1..%d", ErrInvalidConfig, cfg.PageSize, DefaultPageSize)
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.ReconnectMaxDelay == 0 {
		cfg.ReconnectMaxDelay = DefaultReconnectMaxDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tc, err := transportCreds(cfg)
	if err != nil {
		return nil, err
	}
	token, err := tokenSource(cfg)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(tc),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    cfg.Keepalive,
			Timeout: DefaultKeepaliveTimeout,
			// No pings without an open call: grpc-go's default policy
			// counts every ping on a connection without streams that
			// comes within 2 h of the last as a strike, so an idle
			// unary-only client (kube-reconciler between writes) would be
			// sent away every 15 min. A dead idle connection is found by
			// TCP keepalive, or by the next call's deadline.
			PermitWithoutStream: false,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  backoff.DefaultConfig.BaseDelay,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   cfg.ReconnectMaxDelay,
			},
			MinConnectTimeout: 20 * time.Second, // grpc-go's default
		}),
		grpc.WithChainUnaryInterceptor(defaultTimeout(cfg.Timeout)),
		// A page of 500 sessions with long prompts easily passes grpc's 4 MiB
		// default; the server sends whatever the page holds.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxRecvMsgSize)),
		// Every call carries the caller's trace context (traceparent) and
		// is a span of its own, so a consumer's writes show in its trace.
		grpc.WithStatsHandler(apitrace.ClientHandler(apitrace.Options{TracerProvider: cfg.TracerProvider})),
	}
	if token != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: token, requireTLS: cfg.UseTLS}))
	}
	opts = append(opts, cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: new grpc client %s: %w", ErrInvalidConfig, cfg.Addr, err)
	}
	return &Client{
		conn:     conn,
		sessions: ambientv1.NewSessionServiceClient(conn),
		projects: ambientv1.NewProjectServiceClient(conn),
		settings: ambientv1.NewProjectSettingsServiceClient(conn),
		pageSize: cfg.PageSize,
		log:      cfg.Logger,
	}, nil
}

func transportCreds(cfg Config) (credentials.TransportCredentials, error) {
	if !cfg.UseTLS {
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: read CA file: %w", ErrInvalidConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrInvalidConfig, cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return credentials.NewTLS(tc), nil
}

// tokenSource returns what gives each call its token: cfg.Token, or the
// current content of cfg.TokenFile; nil when there is no token.
func tokenSource(cfg Config) (func() string, error) {
	switch {
	case cfg.TokenFile != "":
		f, err := envconfig.NewSecretFile(cfg.TokenFile, cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("%w: token file: %w", ErrInvalidConfig, err)
		}
		return func() string { return f.Value().Reveal() }, nil
	case cfg.Token != "":
		return func() string { return cfg.Token }, nil
	}
	return nil, nil
}

// bearer is the per-RPC credential carrying the token. grpc-go asks it for
// every call (and every stream opened), so a token read from a file
// reaches the next call once the file changed.
type bearer struct {
	token      func() string
	requireTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token()}, nil
}

// RequireTransportSecurity is true only with TLS on, so plaintext dev setups
// can still send the token.
func (b bearer) RequireTransportSecurity() bool { return b.requireTLS }

// defaultTimeout bounds unary calls whose ctx has no deadline. Streams are
// not bounded: they end with their ctx.
func defaultTimeout(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// LogShrunk returns a Shrunk that logs each halving of a list's page size
// to the Config's Logger, naming what is listed.
func (c *Client) LogShrunk(what string) Shrunk {
	return func(page, from, to int32, err error) {
		c.log.Warn("list page over the receive limit, asking again in smaller pages",
			slog.String(logkey.Resource, what), slog.Int("page", int(page)), slog.Int("from", int(from)), slog.Int("to", int(to)), slog.Any(logkey.Err, err))
	}
}

// Close closes the connection; open streams end.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close api connection: %w", err)
	}
	return nil
}

// Conn returns the underlying connection (e.g. for the health service).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Sessions returns the generated SessionService client (unary calls get the
// default timeout, every call the token).
func (c *Client) Sessions() ambientv1.SessionServiceClient { return c.sessions }

// Projects returns the generated ProjectService client.
func (c *Client) Projects() ambientv1.ProjectServiceClient { return c.projects }

// ProjectSettings returns the generated ProjectSettingsService client.
func (c *Client) ProjectSettings() ambientv1.ProjectSettingsServiceClient { return c.settings }
