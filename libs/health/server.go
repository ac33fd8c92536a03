package health

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults used when the matching [Options] field is zero.
const (
	DefaultAddr            = ":8080"
	DefaultCheckTimeout    = 2 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
)

// Server timeouts. The health routes answer quickly; the write timeout leaves
// room for a large /metrics page and for mounted routes such as /tally. No
// route served here streams, so a whole-response WriteTimeout is safe.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
)

// Check reports whether one dependency is usable. It must return when ctx is
// done; ctx carries the per-check timeout.
type Check func(ctx context.Context) error

// Options configures [New].
type Options struct {
	// Addr is the listen address; "" means [DefaultAddr]. ":0" picks a free
	// port (see [Server.Listen]).
	Addr string
	// Registry is served on /metrics; nil leaves /metrics unrouted (404).
	Registry *prometheus.Registry
	// Checks are the initial readiness checks by name; more can be added
	// with [Server.AddCheck].
	Checks map[string]Check
	// CheckTimeout bounds each check; 0 means [DefaultCheckTimeout].
	CheckTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown after Run's ctx ends; 0
	// means [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration
	// Logger receives lifecycle and readiness-change logs; nil discards them.
	Logger *slog.Logger
}

// Server is the health HTTP server. Its methods are safe for concurrent use;
// routes must be mounted on [Server.Router] before Run.
type Server struct {
	addr            string
	checkTimeout    time.Duration
	shutdownTimeout time.Duration
	log             *slog.Logger
	router          chi.Router

	mu     sync.Mutex
	checks map[string]Check // guarded by mu

	// ready is the last readiness outcome (stateReady, stateNotReady or 0
	// before the first probe), so only changes are logged.
	ready atomic.Int32
}

// New validates opts and builds the router; it neither listens nor starts
// goroutines. Errors wrap [ErrInvalidOptions], [ErrInvalidCheck] or
// [ErrDuplicateCheck].
func New(opts Options) (*Server, error) {
	if opts.CheckTimeout < 0 || opts.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("health server: negative timeout: %w", ErrInvalidOptions)
	}
	s := &Server{
		addr:            opts.Addr,
		checkTimeout:    opts.CheckTimeout,
		shutdownTimeout: opts.ShutdownTimeout,
		log:             opts.Logger,
		checks:          make(map[string]Check, len(opts.Checks)),
	}
	if s.addr == "" {
		s.addr = DefaultAddr
	}
	if s.checkTimeout == 0 {
		s.checkTimeout = DefaultCheckTimeout
	}
	if s.shutdownTimeout == 0 {
		s.shutdownTimeout = DefaultShutdownTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for name, fn := range opts.Checks {
		if err := s.AddCheck(name, fn); err != nil {
			return nil, err
		}
	}
	s.router = s.routes(opts.Registry)
	return s, nil
}

// AddCheck registers a readiness check. Errors wrap [ErrInvalidCheck] or
// [ErrDuplicateCheck].
func (s *Server) AddCheck(name string, fn Check) error {
	if name == "" || fn == nil {
		return fmt.Errorf("add check %q: %w", name, ErrInvalidCheck)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.checks[name]; ok {
		return fmt.Errorf("add check %q: %w", name, ErrDuplicateCheck)
	}
	s.checks[name] = fn
	return nil
}

// Router returns the chi router so a service can mount more routes. It has
// no middleware, and chi forbids Use after routes exist, so add middleware
// with Router().With(...) or Router().Group(...).
func (s *Server) Router() chi.Router { return s.router }

// Handler returns the server's HTTP handler (the router), e.g. for httptest.
func (s *Server) Handler() http.Handler { return s.router }

// Listen opens the listener on Options.Addr. With ":0" the caller learns the
// bound port from the listener's Addr and passes it to [Server.Serve].
func (s *Server) Listen(ctx context.Context) (net.Listener, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("health server listen %s: %w", s.addr, err)
	}
	return ln, nil
}

// Run listens on Options.Addr and serves until ctx ends (see [Server.Serve]).
func (s *Server) Run(ctx context.Context) error {
	ln, err := s.Listen(ctx)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln, which it closes, until ctx ends, then shuts down
// gracefully within Options.ShutdownTimeout: in-flight requests finish, and
// their request contexts are cancelled as shutdown starts so long-lived
// handlers return. It returns nil after a clean shutdown and an error if the
// server failed or the shutdown timed out.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.router,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return Serve(ctx, "health", srv, ln, Graceful{Drain: s.shutdownTimeout}, s.log)
}
