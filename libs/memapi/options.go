package memapi

import (
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// DefaultWatchBuffer is the per-watcher event buffer of the real server.
const DefaultWatchBuffer = 256

// Option configures a Server. Options reject invalid values with an error
// wrapping ErrInvalidOption.
type Option func(*options) error

type options struct {
	token       string
	users       []User
	log         *slog.Logger
	now         func() time.Time
	watchBuffer int
	tp          trace.TracerProvider // nil: the OTel global
}

func defaultOptions() options {
	return options{
		log:         slog.New(slog.DiscardHandler),
		now:         time.Now,
		watchBuffer: DefaultWatchBuffer,
	}
}

// WithToken requires every call (REST and gRPC, streams included) to carry
// "authorization: Bearer <token>". Without it (or with ""), no token is
// checked.
func WithToken(token string) Option {
	return func(o *options) error {
		o.token = token
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(log *slog.Logger) Option {
	return func(o *options) error {
		if log == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = log
		return nil
	}
}

// WithClock sets the source of created_at/updated_at (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		o.now = now
		return nil
	}
}

// WithWatchBuffer sets the per-watcher event buffer (default
// DefaultWatchBuffer, like the real server). Events beyond it are dropped.
func WithWatchBuffer(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: watch buffer %d < 1", ErrInvalidOption, n)
		}
		o.watchBuffer = n
		return nil
	}
}

// WithTracerProvider makes the server spans of every unary gRPC call
// (package apitrace: joined to the caller's trace, tagged with the object)
// and of every REST request with tp instead of the OTel global provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) error {
		if tp == nil {
			return fmt.Errorf("%w: nil tracer provider", ErrInvalidOption)
		}
		o.tp = tp
		return nil
	}
}
