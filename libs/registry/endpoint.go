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
)

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
}

// Routable reports whether the endpoint has an address a proxy can dial.
func (e Endpoint) Routable() bool { return e.Host != "" && e.Port > 0 }

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
