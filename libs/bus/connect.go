package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
// set: CredsFile, User/Password, or Token.
type ConnectConfig struct {
	// URL is one or more comma-separated nats:// or tls:// URLs.
	URL string
	// Name identifies the client in server monitoring (service + instance).
	Name string
	// CredsFile is a NATS .creds file (JWT + nkey seed).
	CredsFile string
	User      string
	Password  string
	Token     string
	TLS       TLSConfig
	// ReconnectMin and ReconnectMax bound the exponential reconnect backoff
	// (defaults 100ms and 5s); a random jitter of up to half the delay is
	// added so many clients do not reconnect in lock step.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
}

// LogValue keeps secrets out of logs.
func (c ConnectConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", c.URL),
		slog.String("name", c.Name),
		slog.Bool("creds_file", c.CredsFile != ""),
		slog.Bool("user", c.User != ""),
		slog.Bool("token", c.Token != ""),
		slog.Bool("tls", c.TLS.Enabled()),
	)
}

func (c ConnectConfig) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, fmt.Errorf("url is required: %w", ErrInvalidConfig))
	}
	kinds := 0
	for _, set := range []bool{c.CredsFile != "", c.User != "" || c.Password != "", c.Token != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		errs = append(errs, fmt.Errorf("set only one of creds file, user/password, token: %w", ErrInvalidConfig))
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, fmt.Errorf("password without user: %w", ErrInvalidConfig))
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
// unlimited reconnects with backoff and jitter, and handlers that log
// disconnects, reconnects, closes and async errors on log. Connect uses it;
// it is exported for callers that need nats.Connect themselves.
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
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return reconnectDelay(attempts, minDelay, maxDelay)
		}),
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
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
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

// reconnectDelay is exponential from minDelay, capped at maxDelay, plus up
// to 50% random jitter.
func reconnectDelay(attempts int, minDelay, maxDelay time.Duration) time.Duration {
	d := minDelay
	for i := 1; i < attempts && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d + rand.N(d/2+1)
}

// Connect dials NATS with cfg.Options and waits until the connection is
// established or ctx ends. Reconnects are unlimited afterwards, so a later
// outage never closes the connection; callers Drain it on shutdown. It
// returns ErrInvalidConfig for a bad cfg and ErrNotConnected (wrapping the
// last connect error) when ctx ends first. Credentials are never logged.
func Connect(ctx context.Context, cfg ConnectConfig, log *slog.Logger) (*nats.Conn, error) {
	opts, err := cfg.Options(log)
	if err != nil {
		return nil, err
	}
	connected := make(chan struct{}) // closed by the first connect
	var once sync.Once
	opts = append(opts, nats.ConnectHandler(func(nc *nats.Conn) {
		log.Info("nats connected", slog.String("url", nc.ConnectedUrlRedacted()))
		once.Do(func() { close(connected) })
	}))
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", cfg.URL, err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	select {
	case <-connected:
		return nc, nil
	case <-ctx.Done():
		last := nc.LastError()
		nc.Close()
		return nil, fmt.Errorf("connect nats %s: %w", cfg.URL, errors.Join(ErrNotConnected, ctx.Err(), last))
	}
}
