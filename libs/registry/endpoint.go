package registry

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Endpoint states written by runner-manager.
const (
	// StateClaimed: the session is owned, the runner is not (yet) spawned.
	StateClaimed = "claimed"
	// StateStarting: the runner process exists, its health check has not passed.
	StateStarting = "starting"
	// StateRunning: the runner answered its health check; the endpoint is live.
	StateRunning = "running"
	// StateStopping: the owner is stopping the runner.
	StateStopping = "stopping"
	// StateExited: the runner has exited and its final phase is not yet
	// written to the API (Endpoint.Final holds it). The claim stays so that
	// nobody starts the finished session again; whoever holds the record
	// next writes the final phase, then releases it.
	StateExited = "exited"
)

// Final is how a runner ended, kept in its record until the session's
// final phase is written.
type Final struct {
	// Phase is the phase to write (Completed, Failed, Stopped; Pending for
	// a session handed back at shutdown).
	Phase string `json:"phase"`
	// Reason and Message are those of the RunnerStarted=False condition.
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
	// At is when the runner ended (the completion time).
	At time.Time `json:"at"`
}

// Endpoint is the record of one session's runner, stored as JSON.
type Endpoint struct {
	SessionID string    `json:"session_id"`
	ProjectID string    `json:"project_id,omitempty"`
	Owner     string    `json:"owner"`
	Host      string    `json:"host,omitempty"`
	Port      int       `json:"port,omitempty"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at"`
	State     string    `json:"state"`
	// Final is set with StateExited: the phase to write for the ended
	// runner.
	Final *Final `json:"final,omitempty"`
	// PIDStart is the start time of process PID in clock ticks since boot
	// (/proc/<pid>/stat field 22): with it the owner's next incarnation
	// tells the runner's process group from a recycled pid. Absent in
	// records written before it existed.
	PIDStart uint64 `json:"pid_start,omitempty"`
}

// Routable reports whether the endpoint has an address a proxy can dial
// (an exited runner's record has none).
func (e Endpoint) Routable() bool { return e.Host != "" && e.Port > 0 && e.State != StateExited }

// Addr returns "host:port" (IPv6 hosts bracketed).
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

func (e Endpoint) validate() error {
	if e.SessionID == "" {
		return fmt.Errorf("%w: empty session id", ErrInvalid)
	}
	if e.Owner == "" {
		return fmt.Errorf("%w: empty owner", ErrInvalid)
	}
	if e.Port < 0 || e.Port > 65535 {
		return fmt.Errorf("%w: port %d", ErrInvalid, e.Port)
	}
	if e.Final != nil && e.Final.Phase == "" {
		return fmt.Errorf("%w: final without a phase", ErrInvalid)
	}
	return nil
}

func encode(e Endpoint) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode endpoint %s: %w", e.SessionID, err)
	}
	return b, nil
}

// Decode parses a stored record. It returns [ErrInvalid] for bytes that are
// not an endpoint record.
func Decode(data []byte) (Endpoint, error) {
	var e Endpoint
	if err := json.Unmarshal(data, &e); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := e.validate(); err != nil {
		return Endpoint{}, err
	}
	return e, nil
}
