package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Session phases (UPSTREAM-BEHAVIOUR.md).
const (
	PhasePending   = "Pending"
	PhaseCreating  = "Creating"
	PhaseRunning   = "Running"
	PhaseStopping  = "Stopping"
	PhaseStopped   = "Stopped"
	PhaseCompleted = "Completed"
	PhaseFailed    = "Failed"
)

// Condition types written by runner-manager.
const (
	CondProcessSpawned    = "ProcessSpawned"
	CondHealthCheckPassed = "HealthCheckPassed"
	CondRunnerStarted     = "RunnerStarted"
)

// Condition reasons (also the "reason" label of the failures metric).
const (
	ReasonSpawned            = "Spawned"
	ReasonProcessSpawnFailed = "ProcessSpawnFailed"
	ReasonHealthy            = "Healthy"
	ReasonHealthCheckTimeout = "HealthCheckTimeout"
	ReasonStarted            = "Started"
	ReasonRestarted          = "Restarted"
	ReasonProcessExited      = "ProcessExited"
	ReasonCompleted          = "Completed"
	ReasonStopped            = "Stopped"
	ReasonRunnerLost         = "RunnerLost"
	ReasonCapacityExceeded   = "CapacityExceeded"
	ReasonNoPortAvailable    = "NoPortAvailable"
	ReasonInvalidSessionID   = "InvalidSessionID"
	ReasonShutdown           = "RunnerManagerShutdown"
)

// Condition statuses.
const (
	StatusTrue    = "True"
	StatusFalse   = "False"
	StatusUnknown = "Unknown"
)

// Condition is one entry of a session's conditions JSON.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// conditions is an ordered set keyed by Type.
type conditions []Condition

// parseConditions reads a session's conditions; malformed JSON yields none
// (runner-manager rewrites the ones it owns).
func parseConditions(s *string) conditions {
	if s == nil || *s == "" {
		return nil
	}
	var out conditions
	if json.Unmarshal([]byte(*s), &out) != nil {
		return nil
	}
	return out
}

// set replaces the condition of c.Type, keeping the transition time when the
// status did not change.
func (cs conditions) set(c Condition, now time.Time) conditions {
	c.LastTransitionTime = now.UTC().Truncate(time.Second)
	out := make(conditions, 0, len(cs)+1)
	found := false
	for _, old := range cs {
		if old.Type != c.Type {
			out = append(out, old)
			continue
		}
		found = true
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out = append(out, c)
	}
	if !found {
		out = append(out, c)
	}
	return out
}

// get returns the condition of a type.
func (cs conditions) get(typ string) (Condition, bool) {
	for _, c := range cs {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

func (cs conditions) json() string {
	b, err := json.Marshal(cs)
	if err != nil {
		return "[]" // a slice of plain structs always marshals
	}
	return string(b)
}

// statusUpdate is one phase write.
type statusUpdate struct {
	Phase          string // "" keeps the phase
	StartTime      time.Time
	CompletionTime time.Time
	Conditions     conditions
}

func (u statusUpdate) request(id string) *ambientv1.UpdateSessionStatusRequest {
	req := &ambientv1.UpdateSessionStatusRequest{Id: id}
	if u.Phase != "" {
		req.Phase = &u.Phase
	}
	if !u.StartTime.IsZero() {
		req.StartTime = timestamppb.New(u.StartTime)
	}
	if !u.CompletionTime.IsZero() {
		req.CompletionTime = timestamppb.New(u.CompletionTime)
	}
	if u.Conditions != nil {
		c := u.Conditions.json()
		req.Conditions = &c
	}
	return req
}

// writeStatus writes u, retrying transient API errors with a backoff from
// 100 ms (capped at 2 s): until ctx's deadline when it has one, else four
// times. A deleted session (NotFound) is not an error: there is nothing
// left to report to.
func (r *Reconciler) writeStatus(ctx context.Context, id string, u statusUpdate) error {
	req := u.request(id)
	delay := 100 * time.Millisecond
	var err error
	for attempt := 1; ; attempt++ {
		_, err = r.api.UpdateSessionStatus(ctx, req)
		switch status.Code(err) { // Code sees through wrapping
		case codes.OK:
			r.metrics.statusWrite(ctx, u.Phase, "ok")
			return nil
		case codes.NotFound:
			r.metrics.statusWrite(ctx, u.Phase, "not_found")
			return nil
		case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
			r.metrics.statusWrite(ctx, u.Phase, "error")
			return fmt.Errorf("write phase %q of %s: %w", u.Phase, id, err)
		}
		_, hasDeadline := ctx.Deadline()
		if (!hasDeadline && attempt == 4) || ctx.Err() != nil {
			r.metrics.statusWrite(ctx, u.Phase, "error")
			return fmt.Errorf("write phase %q of %s: %w", u.Phase, id, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}
