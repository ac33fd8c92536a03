package natsserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RandomPort asks the operating system for a free port (the port is then
// kept across Restart).
const RandomPort = -1

// defaultReadyTimeout bounds the wait for ReadyForConnections; JetStream
// recovery of a small store takes well under a second.
const defaultReadyTimeout = 10 * time.Second

// Options configures an embedded server. The zero value is not valid:
// StoreDir is required because JetStream is always on.
type Options struct {
	// StoreDir holds JetStream data; reusing it on Restart keeps streams and KV.
	StoreDir string
	// Host defaults to 127.0.0.1 (loopback only).
	Host string
	// Port is the client port; RandomPort (-1) picks a free one. 0 means 4222.
	Port int
	// ServerName defaults to a name derived from the port. JetStream ties
	// its metadata to the server name, so Restart reuses the first name.
	ServerName string
	// Username/Password or Token require client authentication (tests of
	// credentials handling). Leave empty for no auth.
	Username string
	Password string
	Token    string
	// TLS, when set, makes the server require TLS; set ClientAuth to
	// tls.RequireAndVerifyClientCert to demand client certificates.
	TLS *tls.Config
	// MaxMemory and MaxStore cap JetStream resources (0 = server default).
	MaxMemory int64
	MaxStore  int64
	// Logging sends server logs to stderr; Debug and Trace add detail.
	Logging bool
	Debug   bool
	Trace   bool
	// ReadyTimeout bounds Start and Restart (default 10s).
	ReadyTimeout time.Duration
}

// Server is an embedded nats-server with JetStream. Its methods are safe
// for concurrent use.
type Server struct {
	mu   sync.Mutex // guards opts and srv
	opts Options    // guarded by mu; Port is the resolved port after Start
	srv  *server.Server
}

// Start validates opts, starts the server and waits until it accepts
// connections. It returns ErrInvalidOption or ErrNotReady.
func Start(opts Options) (*Server, error) {
	if opts.StoreDir == "" {
		return nil, fmt.Errorf("store dir is required: %w", ErrInvalidOption)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = defaultReadyTimeout
	}
	if opts.Token != "" && opts.Username != "" {
		return nil, fmt.Errorf("token and username are exclusive: %w", ErrInvalidOption)
	}
	s := &Server{opts: opts}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// start runs the server with s.opts and records the resolved port so a
// later Restart listens on the same address. Caller holds mu or owns s.
func (s *Server) start() error {
	so := &server.Options{
		ServerName:            s.opts.ServerName,
		Host:                  s.opts.Host,
		Port:                  s.opts.Port,
		JetStream:             true,
		StoreDir:              s.opts.StoreDir,
		JetStreamMaxMemory:    s.opts.MaxMemory,
		JetStreamMaxStore:     s.opts.MaxStore,
		Username:              s.opts.Username,
		Password:              s.opts.Password,
		Authorization:         s.opts.Token,
		NoLog:                 !s.opts.Logging,
		NoSigs:                true,
		Debug:                 s.opts.Debug,
		Trace:                 s.opts.Trace,
		DisableShortFirstPing: true,
	}
	if s.opts.TLS != nil {
		so.TLS = true
		so.TLSConfig = s.opts.TLS
		so.TLSVerify = s.opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		so.TLSTimeout = 2
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("new nats server: %w", err)
	}
	if s.opts.Logging {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(s.opts.ReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("nats server on %s:%d after %s: %w", s.opts.Host, s.opts.Port, s.opts.ReadyTimeout, ErrNotReady)
	}
	if addr, ok := srv.Addr().(*net.TCPAddr); ok {
		s.opts.Port = addr.Port
	}
	if s.opts.ServerName == "" {
		s.opts.ServerName = srv.Name()
	}
	s.srv = srv
	return nil
}

// ClientURL returns the nats:// URL clients connect to. It stays the same
// across Restart.
func (s *Server) ClientURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("nats://%s", net.JoinHostPort(s.opts.Host, fmt.Sprint(s.opts.Port)))
}

// Port returns the resolved client port.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Port
}

// StoreDir returns the JetStream store directory.
func (s *Server) StoreDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.StoreDir
}

// NATS returns the underlying nats-server (nil after Shutdown), for tests
// that need server internals. Do not keep it across Restart.
func (s *Server) NATS() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Restart shuts the server down, waits for it to stop, and starts it again
// on the same store directory, host and port, so JetStream state survives
// and clients with reconnects enabled come back. It returns ErrNotReady if
// the new server does not come up (for example the port was taken
// meanwhile).
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	return s.start()
}

// Shutdown stops the server and waits until it has stopped. Calling it
// more than once is safe.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}
