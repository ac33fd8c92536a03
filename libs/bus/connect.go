package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// Reconnect backoff defaults: start fast so a restarted server is found
// within a fraction of a second, cap so a long outage costs little.
const (
	defaultReconnectMin = 100 * time.Millisecond
	defaultReconnectMax = 5 * time.Second
)

// TLSConfig names PEM files for TLS to NATS. CAFile alone verifies the
// server; CertFile and KeyFile together add a client certificate.
type TLSConfig struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// Enabled reports whether any TLS file is set.
func (c TLSConfig) Enabled() bool { return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" }

// ConnectConfig says how to reach NATS. At most one credential kind may be
// set: CredsFile, User with Password or PasswordFile, or Token or
// TokenFile.
type ConnectConfig struct {
	// URL is one or more comma-separated nats:// or tls:// URLs. It may
	// carry user:password, which is never logged (see RedactedURL).
	URL string
	// Name identifies the client in server monitoring (service + instance).
	Name string
	// CredsFile is a NATS .creds file (JWT + nkey seed).
	CredsFile string
	User      string
	Password  string
	// PasswordFile holds User's password (a mounted Secret key), followed
	// as envconfig.SecretFile follows a file: every connect and reconnect
	// sends the file's current password (read again when its stat
	// changed), so a rotated Secret is picked up when the server drops the
	// old password. A replacement that cannot be read or holds no usable
	// password keeps the last good one and logs one warning.
	PasswordFile string
	Token        string
	// TokenFile, instead of Token, holds the token (a mounted Secret key),
	// followed on every (re)connect as PasswordFile is.
	TokenFile string
	TLS       TLSConfig
	// ReconnectMin and ReconnectMax bound the exponential reconnect backoff
	// (defaults 100ms and 5s); each delay is randomised by +/-25 % so many
	// clients do not reconnect in lock step.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
}

// LogValue keeps secrets out of logs, the URL's user information included.
func (c ConnectConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", c.RedactedURL()),
		slog.String("name", c.Name),
		slog.Bool("creds_file", c.CredsFile != ""),
		slog.Bool("user", c.User != ""),
		slog.Bool("password_file", c.PasswordFile != ""),
		slog.Bool("token", c.Token != ""),
		slog.Bool("token_file", c.TokenFile != ""),
		slog.Bool("tls", c.TLS.Enabled()),
	)
}

// RedactedURL is URL fit for logs and errors (envconfig.RedactURLs): in
// each comma-separated URL a password becomes "xxxxx", and so does a user
// without a password, which nats.go sends as a token.
func (c ConnectConfig) RedactedURL() string { return envconfig.RedactURLs(c.URL) }

func (c ConnectConfig) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, fmt.Errorf("url is required: %w", ErrInvalidConfig))
	}
	kinds := 0
	for _, set := range []bool{c.CredsFile != "", c.User != "" || c.Password != "" || c.PasswordFile != "", c.Token != "" || c.TokenFile != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		errs = append(errs, fmt.Errorf("set only one of creds file, user/password, token: %w", ErrInvalidConfig))
	}
	if (c.Password != "" || c.PasswordFile != "") && c.User == "" {
		errs = append(errs, fmt.Errorf("password without user: %w", ErrInvalidConfig))
	}
	if c.Password != "" && c.PasswordFile != "" {
		errs = append(errs, fmt.Errorf("set password or password file, not both: %w", ErrInvalidConfig))
	}
	if c.Token != "" && c.TokenFile != "" {
		errs = append(errs, fmt.Errorf("set token or token file, not both: %w", ErrInvalidConfig))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("tls cert file and key file go together: %w", ErrInvalidConfig))
	}
	if c.ReconnectMin < 0 || c.ReconnectMax < 0 || (c.ReconnectMax > 0 && c.ReconnectMin > c.ReconnectMax) {
		errs = append(errs, fmt.Errorf("reconnect backoff bounds: %w", ErrInvalidConfig))
	}
	return errors.Join(errs...)
}

// Options returns the nats.go options for c: identity, credentials, TLS,
// unlimited reconnects with backoff and jitter (after auth errors too), and
// handlers that log disconnects, reconnects, closes and async errors on log.
// Connect uses it; it is exported for callers that need nats.Connect
// themselves.
func (c ConnectConfig) Options(log *slog.Logger) ([]nats.Option, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	minDelay, maxDelay := c.ReconnectMin, c.ReconnectMax
	if minDelay == 0 {
		minDelay = defaultReconnectMin
	}
	if maxDelay == 0 {
		maxDelay = max(defaultReconnectMax, minDelay)
	}
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		// nats.go gives up (closes the connection for good) at the second
		// auth error in a row from a server, e.g. in a rotation, when the
		// server has the new password before the mounted Secret file does
		// (the kubelet takes up to a minute). Keep retrying with the
		// backoff instead: the password or token is read again on every
		// reconnect, and the "nats" readiness check reports the wait.
		nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(reconnectBackoff(minDelay, maxDelay)),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", slog.String("url", nc.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", slog.Any("err", err))
				return
			}
			log.Info("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", slog.String("url", nc.ConnectedUrlRedacted()))
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("nats connection closed", slog.Any("err", err))
				return
			}
			log.Info("nats connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("nats async error", slog.String("subject", subject), slog.Any("err", err))
		}),
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.PasswordFile != "":
		// nats.go asks the handler on every connect and reconnect, so a
		// password rotated in the file reaches the next reconnect. Read
		// once here, so a file unusable at the start is a configuration
		// error rather than an endless reconnect loop.
		pw, err := envconfig.NewSecretFile(c.PasswordFile, log)
		if err != nil {
			return nil, fmt.Errorf("nats password file: %w: %w", ErrInvalidConfig, err)
		}
		opts = append(opts, nats.UserInfoHandler(func() (string, string) { return c.User, pw.Value().Reveal() }))
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.TokenFile != "":
		// As the password file: the token of every (re)connect is the
		// file's current one.
		tok, err := envconfig.NewSecretFile(c.TokenFile, log)
		if err != nil {
			return nil, fmt.Errorf("nats token file: %w: %w", ErrInvalidConfig, err)
		}
		opts = append(opts, nats.TokenHandler(func() string { return tok.Value().Reveal() }))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	return opts, nil
}

// reconnectBackoff returns nats.go's reconnect delay func: exponential from
// minDelay, doubling to maxDelay, each delay randomised by +/-25 % so many
// clients do not reconnect in lock step. nats.go counts attempts from 1 in
// each outage, so the first attempt of an outage starts over at minDelay.
func reconnectBackoff(minDelay, maxDelay time.Duration) func(attempts int) time.Duration {
	var mu sync.Mutex
	// guarded by mu: nats.go calls the func from its reconnect goroutine,
	// one outage after another.
	b := &backoff.ExponentialBackOff{InitialInterval: minDelay, RandomizationFactor: reconnectJitter, Multiplier: 2, MaxInterval: maxDelay}
	b.Reset()
	return func(attempts int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		if attempts <= 1 {
			b.Reset()
		}
		return b.NextBackOff()
	}
}

// reconnectJitter is the +/- fraction applied to each reconnect delay.
const reconnectJitter = 0.25

// Dial starts connecting to NATS with cfg.Options and returns at once: the
// connection retries in the background (forever, like a later outage), and
// connected is closed on its first connect. A service that must serve before
// NATS is up (agui-proxy) hands the connection to its parts right away. It
// returns ErrInvalidConfig for a bad cfg. Credentials are never logged.
func Dial(cfg ConnectConfig, log *slog.Logger) (nc *nats.Conn, connected <-chan struct{}, err error) {
	opts, err := cfg.Options(log)
	if err != nil {
		return nil, nil, err
	}
	first := make(chan struct{}) // closed by the first connect
	var once sync.Once
	opts = append(opts, nats.ConnectHandler(func(nc *nats.Conn) {
		log.Info("nats connected", slog.String("url", nc.ConnectedUrlRedacted()))
		once.Do(func() { close(first) })
	}))
	nc, err = nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w", cfg.RedactedURL(), err)
	}
	if nc.IsConnected() {
		// Connected synchronously: the handler only runs for a connect that
		// RetryOnFailedConnect completed in the background.
		once.Do(func() { close(first) })
	}
	return nc, first, nil
}

// Connect dials NATS (see Dial) and waits until the connection is
// established or ctx ends. Reconnects are unlimited afterwards, so a later
// outage never closes the connection; callers Drain it on shutdown. It
// returns ErrInvalidConfig for a bad cfg and ErrNotConnected (wrapping the
// last connect error) when ctx ends first.
func Connect(ctx context.Context, cfg ConnectConfig, log *slog.Logger) (*nats.Conn, error) {
	nc, connected, err := Dial(cfg, log)
	if err != nil {
		return nil, err
	}
	select {
	case <-connected:
		return nc, nil
	case <-ctx.Done():
		last := nc.LastError()
		nc.Close()
		return nil, fmt.Errorf("connect nats %s: %w", cfg.RedactedURL(), errors.Join(ErrNotConnected, ctx.Err(), last))
	}
}

// Drain drains nc (subscriptions finish what they hold, buffered publishes
// are flushed) and waits until it is closed, or closes it when ctx ends
// first. A connection that is reconnecting cannot drain and is closed at
// once; one already closed is left alone. It returns why the drain fell
// short, if it did. Every service drains this way, through the runtime.
func Drain(ctx context.Context, nc *nats.Conn) error {
	closed := make(chan struct{})
	var once sync.Once
	prev := nc.ClosedHandler()
	nc.SetClosedHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		once.Do(func() { close(closed) })
	})
	switch err := nc.Drain(); {
	case errors.Is(err, nats.ErrConnectionClosed):
		return nil
	case err != nil:
		nc.Close() // Drain closed it already when reconnecting; Close is idempotent
		return fmt.Errorf("drain nats: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("drain nats: %w", ctx.Err())
	}
}
