package runner

import (
	"errors"
	"fmt"
	"time"
)

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

// PortsCoolingError is the [ErrNoPorts] of a pool whose only ports left
// are waiting out its reuse delay ([WithReuseDelay]): unlike a range that
// is all taken, this shortage ends by itself, ReusableIn from the
// [Pool.Acquire] that returned it. Callers tell it apart with errors.As,
// and may wait for it instead of giving up (a lost runner's restart), or
// wake their queue when it ends; errors.Is finds ErrNoPorts in it.
type PortsCoolingError struct {
	Cooling    int           // ports waiting out the delay
	Delay      time.Duration // the pool's reuse delay (PORT_REUSE_DELAY)
	ReusableIn time.Duration // until the first of them is reusable; > 0
}

func (e *PortsCoolingError) Error() string {
	// Rounded up: "0s" would read as "now" while it is not. The setting
	// is named for the operator, who would otherwise see free ports and
	// no runner.
	return fmt.Sprintf("%s: %d released port(s) held back for PORT_REUSE_DELAY (%s), the first reusable in %s",
		ErrNoPorts, e.Cooling, e.Delay, (e.ReusableIn + time.Second - 1).Truncate(time.Second))
}

func (e *PortsCoolingError) Unwrap() error { return ErrNoPorts }
