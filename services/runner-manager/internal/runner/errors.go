package runner

import "errors"

var (
	// ErrNoPorts is returned by [Pool.Acquire] when every port of the range is
	// taken, busy on the host, or released less than the pool's reuse delay
	// ago.
	ErrNoPorts = errors.New("runner: no free port in range")
	// ErrPortsUnknown is returned by [Pool.Acquire] when the ports named
	// elsewhere (see [Pool.SkipNamed]) cannot be read: no port is handed
	// out that might still be named.
	ErrPortsUnknown = errors.New("runner: named ports unknown")
	// ErrAtCapacity is returned by [Manager.Start] when the maximum number of
	// runners is running.
	ErrAtCapacity = errors.New("runner: at capacity")
	// ErrProjectAtCapacity is returned by [Manager.Start] when the
	// session's project has its Config.MaxPerProject runners. It is an
	// [ErrAtCapacity] too (errors.Is), so callers that only know that one
	// wait for capacity alike.
	ErrProjectAtCapacity error = projectAtCapacityError{}
	// ErrBadSessionID is returned for session ids that cannot name a workspace
	// directory inside the root (empty, ".", "..", path separators, NUL).
	ErrBadSessionID = errors.New("runner: invalid session id")
	// ErrBadEnvironment is returned by [ParseEnvironmentVariables] for a
	// session's environment_variables that are no JSON object of strings
	// naming valid variables.
	ErrBadEnvironment = errors.New("runner: invalid environment variables")
	// ErrBadRepos is returned by [SessionRepos] for a session's repos that
	// are no JSON list of repos with URLs, or name a repo whose directory
	// would not be one inside the runner's repos directory.
	ErrBadRepos = errors.New("runner: invalid repos")
	// ErrRunning is returned by [Manager.Start] when the session already has a
	// runner in this manager.
	ErrRunning = errors.New("runner: session already running")
	// ErrSpawn wraps the reason a command could not be started (missing
	// binary, bad workspace).
	ErrSpawn = errors.New("runner: spawn failed")
	// ErrHealthTimeout is returned by [Process.WaitHealthy] when the runner did
	// not answer /health in time.
	ErrHealthTimeout = errors.New("runner: health check timeout")
	// ErrExited is returned by [Process.WaitHealthy] when the process ended
	// before it became healthy.
	ErrExited = errors.New("runner: process exited")
)

// projectAtCapacityError is ErrProjectAtCapacity's type: one message, and
// errors.Is finds ErrAtCapacity in it.
type projectAtCapacityError struct{}

func (projectAtCapacityError) Error() string { return "runner: project at its cap" }

func (projectAtCapacityError) Is(target error) bool { return target == ErrAtCapacity }
