package natsserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
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
	// ConfigFile is a nats-server configuration file (nats.conf syntax, with
	// include and $VARIABLE references to the environment resolved as the
	// server binary does) read before the fields here apply: the deployed
	// authorization blocks (users, permissions) are loaded from the very file
	// the chart and docker-compose ship. StoreDir, Host, Port, ServerName and
	// the logging fields always override the file, its monitoring port is
	// not opened, and JetStream is always on.
	ConfigFile string
	// Username/Password or Token require client authentication (tests of
	// credentials handling). Leave empty for no auth. They are exclusive
	// with users defined in ConfigFile.
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
	// Cluster, when set, makes the server a member of a JetStream cluster
	// (tests of replicated streams: R3 on fewer servers than replicas).
	Cluster *Cluster
}

// Cluster is the clustering of one server: its cluster name and route
// port (on the server's Host), and the routes to the other members (every
// member's route URL, its own included, as a static cluster is usually
// configured).
type Cluster struct {
	Name string
	// Port is the route port (fixed: peers must know it before the server
	// starts).
	Port   int
	Routes []string
}

// Server is an embedded nats-server with JetStream. Its methods are safe
// for concurrent use.
type Server struct {
	mu   sync.Mutex // guards opts, srv and name
	opts Options    // guarded by mu; Port is the resolved port after Start
	srv  *server.Server
	// name is the ServerName the running server was started with ("" when
	// it chose one): a reload must not change it.
	name string
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
	so, err := s.serverOptions()
	if err != nil {
		return err
	}
	s.name = so.ServerName
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

// serverOptions builds the nats-server options: ConfigFile first, then the
// fields of s.opts on top. Caller holds mu or owns s.
func (s *Server) serverOptions() (*server.Options, error) {
	so := &server.Options{}
	if s.opts.ConfigFile != "" {
		var err error
		if so, err = server.ProcessConfigFile(s.opts.ConfigFile); err != nil {
			return nil, fmt.Errorf("nats config %s: %w: %w", s.opts.ConfigFile, ErrInvalidOption, err)
		}
	}
	so.ServerName = s.opts.ServerName
	so.Host = s.opts.Host
	so.Port = s.opts.Port
	// A file's monitoring ports are fixed numbers meant for a container of
	// its own; an embedded server serves clients only.
	so.HTTPPort, so.HTTPSPort = 0, 0
	so.JetStream = true
	so.StoreDir = s.opts.StoreDir
	if s.opts.MaxMemory != 0 {
		so.JetStreamMaxMemory = s.opts.MaxMemory
	}
	if s.opts.MaxStore != 0 {
		so.JetStreamMaxStore = s.opts.MaxStore
	}
	if s.opts.Username != "" || s.opts.Token != "" {
		so.Username, so.Password, so.Authorization = s.opts.Username, s.opts.Password, s.opts.Token
	}
	so.NoLog = !s.opts.Logging
	so.NoSigs = true
	so.Debug = s.opts.Debug
	so.Trace = s.opts.Trace
	so.DisableShortFirstPing = true
	if c := s.opts.Cluster; c != nil {
		routes, err := routeURLs(c.Routes)
		if err != nil {
			return nil, err
		}
		so.Cluster.Name = c.Name
		so.Cluster.Host = s.opts.Host
		so.Cluster.Port = c.Port
		so.Routes = routes
	}
	if s.opts.TLS != nil {
		so.TLS = true
		so.TLSConfig = s.opts.TLS
		so.TLSVerify = s.opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		so.TLSTimeout = 2
	}
	return so, nil
}

// routeURLs parses a cluster's route URLs.
func routeURLs(raw []string) ([]*url.URL, error) {
	out := make([]*url.URL, 0, len(raw))
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("cluster route %q: %w: %w", r, ErrInvalidOption, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// Reload reads ConfigFile again and applies it to the running server, as a
// SIGHUP does to the binary: changed users, passwords and permissions take
// effect, and clients whose credentials no longer work are disconnected. It
// returns ErrInvalidOption when the file is bad or the change cannot be
// applied without a restart, and ErrNotReady when the server is down.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return fmt.Errorf("reload: %w", ErrNotReady)
	}
	so, err := s.serverOptions()
	if err != nil {
		return err
	}
	so.ServerName = s.name
	if err := s.srv.ReloadOptions(so); err != nil {
		return fmt.Errorf("reload nats config: %w: %w", ErrInvalidOption, err)
	}
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
