package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// Config of a Manager.
type Config struct {
	Command       []string // argv of the runner
	WorkspaceRoot string
	HostEnv       []string     // the host environment ("K=V"); filtered by EnvAllow
	EnvAllow      EnvAllowList // which host variables runners inherit
	BossURL       string
	BossSpace     string
	// BackendURL and BotToken are passed to every runner as
	// BACKEND_API_URL and BOT_TOKEN (where the platform's runner sends its
	// first prompt, and with what token). Empty: not passed.
	BackendURL  string
	BotToken    envconfig.Redacted
	MaxSessions int
	// MaxPerProject caps the runners of one project (0: no cap beyond
	// MaxSessions), so that one tenant cannot hold every slot of the
	// replica while another tenant's sessions wait.
	MaxPerProject int
	StopGrace     time.Duration
	TailLines     int // stderr lines kept for the exit report
	// Member is this replica's member id, passed to every runner as
	// RUNNER_MANAGER_MEMBER so that the replica's next incarnation can end
	// what a crash left running (EndOrphans). Empty: not passed.
	Member string
	// ListenHost is the address runners are told to listen on (AGUI_HOST):
	// ListenHostFor the advertised host. Empty: 127.0.0.1, never every
	// interface by omission.
	ListenHost string
	// Reaper, when set, is this process's child subreaper: it reaps the
	// orphans runners leave and kills a session's escaped processes when
	// its runner ends (see Reaper). Nil in processes that are not
	// runner-manager (tests).
	Reaper *Reaper
}

// Manager starts and tracks runner processes, one per session at most.
// Safe for concurrent use.
type Manager struct {
	cfg  Config
	pool *Pool
	log  *slog.Logger
	wg   sync.WaitGroup // one per process waiter and per workspace deletion (RemoveWorkspace)
	// trashMu serialises the deletions of the workspace trash.
	trashMu sync.Mutex

	mu    sync.Mutex
	procs map[string]*Process // guarded by mu; running (or reserved: nil) per session
	// projectOf and perProject count procs by project (the project each
	// runner was started for), for MaxPerProject; guarded by mu.
	projectOf  map[string]string
	perProject map[string]int
}

// New returns a manager. It validates cfg and neither blocks nor starts
// goroutines.
func New(cfg Config, pool *Pool, log *slog.Logger) (*Manager, error) {
	switch {
	case len(cfg.Command) == 0:
		return nil, errors.New("runner command is empty")
	case cfg.WorkspaceRoot == "":
		return nil, errors.New("workspace root is empty")
	case cfg.MaxSessions < 1:
		return nil, fmt.Errorf("max sessions %d: want >= 1", cfg.MaxSessions)
	case cfg.MaxPerProject < 0:
		return nil, fmt.Errorf("max sessions per project %d: want >= 0", cfg.MaxPerProject)
	case pool == nil:
		return nil, errors.New("port pool is nil")
	}
	if cfg.TailLines <= 0 {
		cfg.TailLines = 50
	}
	if cfg.ListenHost == "" {
		cfg.ListenHost = ListenLoopback
	}
	return &Manager{cfg: cfg, pool: pool, log: log, procs: map[string]*Process{}, projectOf: map[string]string{}, perProject: map[string]int{}}, nil
}

// Pool returns the manager's port pool.
func (m *Manager) Pool() *Pool { return m.pool }

// Count returns the number of running (or starting) runners.
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.procs)
}

// Get returns the session's process if it runs here.
func (m *Manager) Get(sessionID string) (*Process, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.procs[sessionID]
	return p, ok && p != nil
}

// Sessions returns the ids of sessions with a runner here.
func (m *Manager) Sessions() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.procs))
	for id := range m.procs {
		out = append(out, id)
	}
	return out
}

// HasCapacity reports whether another runner may start now (a session slot
// and a port); it is a hint, Start decides.
func (m *Manager) HasCapacity() bool { return m.Free() > 0 }

// Free reports how many more runners may start now (session slots and
// ports neither in use nor waiting out the pool's reuse delay); a hint,
// Start decides.
func (m *Manager) Free() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeLocked()
}

func (m *Manager) freeLocked() int {
	// The pool's Free, not Size-InUse: a port waiting out
	// PORT_REUSE_DELAY serves no start until the delay ends.
	return max(0, min(m.cfg.MaxSessions-len(m.procs), m.pool.Free()))
}

// FreeFor reports how many more runners of project may start now: Free,
// bounded by what is left of the project's MaxPerProject. A hint, Start
// decides.
func (m *Manager) FreeFor(project string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	free := m.freeLocked()
	if m.cfg.MaxPerProject > 0 {
		free = min(free, max(0, m.cfg.MaxPerProject-m.perProject[project]))
	}
	return free
}

// reserveLocked takes a session slot for s (its process nil until spawned).
func (m *Manager) reserveLocked(s Session) {
	m.procs[s.ID] = nil
	m.projectOf[s.ID] = s.ProjectID
	m.perProject[s.ProjectID]++
}

// forgetLocked gives the slot of session id back.
func (m *Manager) forgetLocked(id string) {
	delete(m.procs, id)
	project, ok := m.projectOf[id]
	if !ok {
		return
	}
	delete(m.projectOf, id)
	if m.perProject[project]--; m.perProject[project] <= 0 {
		delete(m.perProject, project)
	}
}

// Start spawns the runner of s. It returns [ErrRunning], [ErrAtCapacity]
// (also for a project at MaxPerProject, then with [ErrProjectAtCapacity]),
// [ErrNoPorts], [ErrPortsUnknown], [ErrBadSessionID] or [ErrSpawn]. The
// process is tracked until it exits (its session slot is free then); its
// port stays taken until [Process.ReleasePort] after the exit, since the
// session's registry record may still send clients to it.
func (m *Manager) Start(ctx context.Context, s Session) (*Process, error) {
	m.mu.Lock()
	if _, ok := m.procs[s.ID]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("start %s: %w", s.ID, ErrRunning)
	}
	if len(m.procs) >= m.cfg.MaxSessions {
		m.mu.Unlock()
		return nil, fmt.Errorf("start %s: %d of %d sessions: %w", s.ID, m.cfg.MaxSessions, m.cfg.MaxSessions, ErrAtCapacity)
	}
	if n := m.perProject[s.ProjectID]; m.cfg.MaxPerProject > 0 && n >= m.cfg.MaxPerProject {
		m.mu.Unlock()
		return nil, fmt.Errorf("start %s: project %q has %d of its %d sessions: %w", s.ID, s.ProjectID, n, m.cfg.MaxPerProject, ErrProjectAtCapacity)
	}
	m.reserveLocked(s) // reserve the slot while spawning outside the lock
	m.mu.Unlock()

	p, err := m.start(ctx, s)
	if err != nil {
		m.mu.Lock()
		m.forgetLocked(s.ID)
		m.mu.Unlock()
	}
	return p, err
}

func (m *Manager) start(ctx context.Context, s Session) (*Process, error) {
	ws, err := ensureWorkspace(m.cfg.WorkspaceRoot, s.ID)
	if err != nil {
		if errors.Is(err, ErrBadSessionID) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	if s.Prompt != nil {
		// A file, since a large prompt cannot be an environment variable.
		if s.PromptFile, err = writePrompt(ws, *s.Prompt); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
		}
	}
	port, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.ID, err)
	}
	s.Owner = m.cfg.Member
	s.ListenHost = m.cfg.ListenHost
	s.BackendURL, s.BotToken = m.cfg.BackendURL, m.cfg.BotToken.Reveal()
	env := BuildEnv(m.cfg.HostEnv, m.cfg.EnvAllow, s, port, ws, m.cfg.BossURL, m.cfg.BossSpace)
	var cmd *exec.Cmd
	start := func() (int, error) {
		c, err := spawn(ctx, m.cfg.Command, ws, env)
		if err != nil {
			return 0, err
		}
		cmd = c
		return c.Process.Pid, nil
	}
	if m.cfg.Reaper != nil {
		err = m.cfg.Reaper.spawn(start)
	} else {
		_, err = start()
	}
	if err != nil {
		m.pool.Release(port)
		return nil, fmt.Errorf("start %s: %w", s.ID, err)
	}
	p := &Process{
		SessionID: s.ID, PID: cmd.Process.Pid, Port: port, Workspace: ws, StartedAt: time.Now(),
		tailLines: m.cfg.TailLines, reaper: m.cfg.Reaper, done: make(chan struct{}), killed: make(chan struct{}),
		releasePort: func() { m.pool.Release(port) },
	}
	// Read before the waiter runs: until it reaps the runner, /proc keeps
	// its entry even if it exited at once.
	if p.StartTicks, err = startTicks(p.PID); err != nil {
		m.log.Warn("runner start time unknown: a lost runner's group cannot be ended", slog.String(logkey.SessionID, s.ID), slog.String(logkey.Err, err.Error()))
	}
	// Recorded before its waiter runs: a runner that exits at once must
	// not find its slot still reserved (nil) and leave it taken for good.
	m.mu.Lock()
	m.procs[s.ID] = p
	m.mu.Unlock()
	m.wg.Add(1)
	go func() { // owned by the Manager (Wait); ends when the process exits
		defer m.wg.Done()
		p.wait(cmd, func() { // the port stays taken: see Process.ReleasePort
			m.mu.Lock()
			if m.procs[s.ID] == p {
				m.forgetLocked(s.ID)
			}
			m.mu.Unlock()
		})
	}()
	m.log.Info("runner spawned", slog.String(logkey.SessionID, s.ID), slog.Int(logkey.PID, p.PID), slog.Int(logkey.Port, port))
	return p, nil
}

// StopAll stops every runner (SIGTERM, SIGKILL after the grace) in parallel
// and waits until all have exited or ctx ends.
func (m *Manager) StopAll(ctx context.Context) error {
	m.mu.Lock()
	procs := make([]*Process, 0, len(m.procs))
	for _, p := range m.procs {
		if p != nil {
			procs = append(procs, p)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Add(1)
		go func() { // owned by StopAll; ends when the process exits or ctx ends
			defer wg.Done()
			errs[i] = p.Stop(ctx, m.cfg.StopGrace)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Wait blocks until every process waiter has finished (all runners
// exited); with a Reaper it then kills whatever descends from this
// process still (escaped runner processes without a session marker).
func (m *Manager) Wait() {
	m.wg.Wait()
	if m.cfg.Reaper != nil {
		m.cfg.Reaper.KillDescendants()
	}
}
