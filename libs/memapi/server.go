package memapi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Server is the in-memory ambient API. It implements SessionService,
// ProjectService, ProjectSettingsService and UserService with the semantics
// of the real ambient-api-server (see the package doc) and offers fault
// injection for tests. All methods are safe for concurrent use.
type Server struct {
	opts options
	// SHA-256 of the service token and of each user's token (same order as
	// opts.users): equal-length constant-time comparisons.
	tokenHash  [sha256.Size]byte
	userHashes [][sha256.Size]byte

	sessions *store[*ambientv1.Session]
	projects *store[*ambientv1.Project]
	settings *store[*ambientv1.ProjectSettings]
	// apiUsers are UserService's User objects, not the callers of the
	// multi-user mode (opts.users).
	apiUsers *store[*ambientv1.User]
	broker   *broker // the open watch streams of all four
	outage   outage  // an injected outage of the whole API (StartOutage)

	watch     watchCounts
	sendDelay atomic.Int64 // nanoseconds
	delayMu   sync.Mutex
	delayCh   chan struct{} // guarded by delayMu; closed and replaced when the delay changes

	mu       sync.Mutex
	calls    map[string]int                      // guarded by mu
	faults   map[string]fault                    // guarded by mu
	listHook func(fullMethod string, page int32) // guarded by mu
	served   bool                                // guarded by mu
	grpcAddr string                              // guarded by mu
	restURL  string                              // guarded by mu
	ready    chan struct{}                       // closed once Serve recorded the addresses
}

type fault struct {
	n    int
	code codes.Code
}

// New returns a Server without starting anything. It returns an error
// wrapping ErrInvalidOption when an option is invalid.
func New(opts ...Option) (*Server, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := validUsers(o.users, o.token); err != nil {
		return nil, err
	}
	s := &Server{
		opts:      o,
		tokenHash: sha256.Sum256([]byte(o.token)),
		calls:     make(map[string]int),
		faults:    make(map[string]fault),
		delayCh:   make(chan struct{}),
		ready:     make(chan struct{}),
	}
	s.outage.changed = make(chan struct{})
	for _, u := range o.users {
		s.userHashes = append(s.userHashes, sha256.Sum256([]byte(u.Token)))
	}
	s.broker = newBroker(&s.watch)
	s.sessions = newStore[*ambientv1.Session](restapi.KindSession, s.broker, nil)
	// The real sessions table's only foreign key: parent_session_id
	// REFERENCES sessions(id) (plugins/sessions/migration.go,
	// schemaExpansionMigration). project_id has none (only an index), so a
	// session may name any project.
	s.sessions.fk = &foreignKey[*ambientv1.Session]{
		table: "sessions", constraint: "fk_sessions_parent_session_id",
		ref: func(o *ambientv1.Session) (string, bool) { return o.GetParentSessionId(), o.ParentSessionId != nil },
	}
	// The real server's unique indexes: projects.name (a taken name is 409
	// "This Project already exists": measured for creates; a rename, whose
	// id stays, is 409 "Changes to Project conflict with existing records",
	// read from its migrations and rh-trex's HandleUpdateError) and
	// project_settings.project_id (read from its migrations).
	s.projects = newStore(restapi.KindProject, s.broker, (*ambientv1.Project).GetName)
	s.settings = newStore(restapi.KindProjectSettings, s.broker, (*ambientv1.ProjectSettings).GetProjectId)
	// project_settings.project_id REFERENCES projects(id)
	// (plugins/projectSettings/migration.go, constraintMigration). The
	// column is NOT NULL, so every settings object refers to a project,
	// "" included (a value no project's id can be). Its ON DELETE CASCADE
	// never fires: projects are deleted softly. The check reads the
	// projects store under the settings lock (lock order: see foreignKey).
	s.settings.fk = &foreignKey[*ambientv1.ProjectSettings]{
		table: "project_settings", constraint: "fk_project_settings_project_id",
		ref:   func(o *ambientv1.ProjectSettings) (string, bool) { return o.GetProjectId(), true },
		known: s.projects.known,
	}
	// No unique index: the real users table has none (plugins/users'
	// migration), so a username may be taken twice.
	s.apiUsers = newStore[*ambientv1.User](kindUser, s.broker, nil)
	return s, nil
}

// Token returns the configured token ("" when none is checked).
func (s *Server) Token() string { return s.opts.token }

// GRPCAddr returns the gRPC listener address once Serve has started, else "".
func (s *Server) GRPCAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grpcAddr
}

// RESTURL returns the REST base URL ("http://host:port") once Serve has
// started, else "".
func (s *Server) RESTURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restURL
}

// Ready is closed once Serve has started; GRPCAddr and RESTURL are set then.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// PurgeDeleted forgets every deleted object for good, as a purge of the
// soft-deleted rows from the real server's database would (a maintenance
// job; the server runs none itself): their ids and unique keys become free
// again, and a deleted session no longer satisfies a new
// parent_session_id, nor a deleted project new settings. For tests that
// need an id used again, which the real API alone never allows (a
// project re-created under a deleted one's name). It sends no event, and
// it does not do what such a purge would make the foreign keys do to live
// rows (a child session's parent_session_id set to NULL, ON DELETE SET
// NULL; a purged project's settings deleted, ON DELETE CASCADE): they
// stay as they are.
func (s *Server) PurgeDeleted() {
	s.sessions.purge()
	s.projects.purge()
	s.settings.purge()
	s.apiUsers.purge()
}

// EndWatches ends every open watch stream with a clean end of stream (the
// client's Recv returns io.EOF), as a restarting real server does. Queued
// events of those streams are lost. It returns the number of streams ended.
func (s *Server) EndWatches() int {
	return s.broker.end(false)
}

// Watchers returns the number of open watch streams (all resources).
func (s *Server) Watchers() int {
	return s.broker.count()
}

// FailNext makes the next n calls of fullMethod (e.g.
// ambientv1.SessionService_ListSessions_FullMethodName) fail with code. It
// replaces an earlier setting for the same method; n <= 0 clears it. Calls
// rejected for a missing token do not consume failures. gRPC only.
func (s *Server) FailNext(fullMethod string, n int, code codes.Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.faults, fullMethod)
		return
	}
	s.faults[fullMethod] = fault{n: n, code: code}
}

// CallCount returns how many gRPC calls of fullMethod the server received
// (failed and unauthenticated ones included).
func (s *Server) CallCount(fullMethod string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[fullMethod]
}

// CountCalls is CallCount under the name planned in the team brief.
func (s *Server) CountCalls(fullMethod string) int { return s.CallCount(fullMethod) }

// SetSendDelay delays every watch event send by d (0 turns it off), to
// simulate a slow server path. Sends already waiting re-evaluate the new
// delay at once. While a stream waits, its buffer fills and overflowing
// events are dropped.
func (s *Server) SetSendDelay(d time.Duration) {
	s.sendDelay.Store(int64(max(d, 0)))
	s.delayMu.Lock()
	defer s.delayMu.Unlock()
	close(s.delayCh)
	s.delayCh = make(chan struct{})
}

// SetListHook sets fn to run during every List call (gRPC and REST), after
// the page was read from the store and before the response is returned; nil
// removes it. fn runs without locks held, so it may mutate the server (for
// example to create objects while a paginated list is in progress). It gets
// the gRPC full method name of the list and the clamped page number.
func (s *Server) SetListHook(fn func(fullMethod string, page int32)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listHook = fn
}

// Dropped returns how many watch events were dropped because a watcher's
// buffer was full.
func (s *Server) Dropped() int64 { return s.watch.dropped.Load() }

// WatchPending returns how many watch events are queued on open watch
// streams and not yet sent. An event that vanishes (its object was deleted
// before the send) or whose stream ends first stops counting.
//
// With WatchSent it tells a test when the server is quiet: WatchSent read
// before and after, unchanged, with WatchPending 0 in between, means every
// change made so far was sent, and the watchers' own counts of what they
// received say whether it arrived.
func (s *Server) WatchPending() int64 { return s.watch.pending.Load() }

// WatchSent returns how many watch events all streams sent, over the
// server's life.
func (s *Server) WatchSent() int64 { return s.watch.sent.Load() }

// Len returns the number of sessions, projects and project settings stored.
func (s *Server) Len() (sessions, projects, projectSettings int) {
	return s.sessions.len(), s.projects.len(), s.settings.len()
}

func (s *Server) runListHook(fullMethod string, page int32) {
	s.mu.Lock()
	fn := s.listHook
	s.mu.Unlock()
	if fn != nil {
		fn(fullMethod, page)
	}
}

// waitSendDelay blocks for the configured send delay. It returns false when
// the stream must end (ctx done or end closed).
func (s *Server) waitSendDelay(ctx context.Context, end <-chan struct{}) bool {
	for {
		s.delayMu.Lock()
		changed := s.delayCh
		s.delayMu.Unlock()
		d := time.Duration(s.sendDelay.Load())
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			return true
		case <-changed:
			t.Stop()
			// Re-evaluate the new delay from the start.
		case <-ctx.Done():
			t.Stop()
			return false
		case <-end:
			t.Stop()
			return false
		}
	}
}

// exempt reports whether fullMethod needs no token. The real server's
// bearer-token interceptors let exactly these two through (read from its
// code: the health check, for probes without secrets, and v1alpha
// reflection); the health Watch and List and v1 reflection need a token
// like any other call.
func exempt(fullMethod string) bool {
	return fullMethod == "/grpc.health.v1.Health/Check" ||
		fullMethod == "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
}

// admit counts the call, refuses it during an outage (StartOutage), checks
// the token and applies injected faults. It returns the calling user (nil:
// the service token, or no token checked).
func (s *Server) admit(ctx context.Context, fullMethod string) (*User, error) {
	if exempt(fullMethod) {
		// A server that is down answers no health check either.
		return nil, s.refuseInOutage()
	}
	s.mu.Lock()
	s.calls[fullMethod]++
	s.mu.Unlock()
	// Counted all the same: a test reads how often clients retried.
	if err := s.refuseInOutage(); err != nil {
		return nil, err
	}
	var auth string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			auth = v[0]
		}
	}
	u, err := s.checkAuth(auth)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.faults[fullMethod]; ok {
		f.n--
		if f.n <= 0 {
			delete(s.faults, fullMethod)
		} else {
			s.faults[fullMethod] = f
		}
		return nil, status.Errorf(f.code, "memapi: injected fault for %s", fullMethod)
	}
	return u, nil
}

// checkAuth validates an Authorization header value against the service
// token and the users' tokens, and returns the user (nil: the service
// token). A user is accepted and not narrowed: the real server's gRPC
// handlers authorize nothing.
func (s *Server) checkAuth(header string) (*User, error) {
	if !s.checksTokens() {
		return nil, nil
	}
	if scheme, _, ok := strings.Cut(header, " "); !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	u, err := s.checkCaller(header)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "invalid token")
	}
	return u, nil
}

// checksTokens reports whether calls need a token.
func (s *Server) checksTokens() bool { return s.opts.token != "" || len(s.opts.users) > 0 }

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	u, err := s.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if u != nil {
		ctx = withCaller(ctx, u) // a create records its creator
	}
	return handler(ctx, req)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, err := s.admit(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// stop ends all watches and refuses new ones (shutdown).
func (s *Server) stop() {
	s.broker.end(true)
}

// timestamps returns now at full precision.
func (s *Server) now() time.Time { return s.opts.now() }

func (s *Server) markServed(grpcLis, restLis net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served {
		return fmt.Errorf("serve: %w", ErrServing)
	}
	s.served = true
	s.grpcAddr, s.restURL = grpcLis.Addr().String(), "http://"+restLis.Addr().String()
	// Listening from here on (the listeners are open: a dial is queued
	// until the servers accept), before Ready says so: an outage started
	// once Ready is closed waits for Serve to close them (outage.settle),
	// and its end for Serve to listen again.
	s.outage.setServing(listening)
	close(s.ready)
	return nil
}
