package session

import (
	"encoding/json"
	"fmt"
	"time"
)

// Condition statuses.
const (
	StatusTrue    = "True"
	StatusFalse   = "False"
	StatusUnknown = "Unknown"
)

// Condition is one entry of a session's conditions: the fields of the
// AgenticSession CRD's status.conditions[] (UPSTREAM-BEHAVIOUR.md), as the
// API stores them in the session's conditions JSON. Optional fields are
// left out when empty, so a condition without a time (kube-reconciler's:
// the same failure must produce the same bytes) marshals without one.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime,omitzero"`
	ObservedGeneration int64     `json:"observedGeneration,omitempty"`
}

// Conditions is a session's conditions: an ordered set keyed by Type. The
// zero value is empty and ready to use; methods never modify the receiver.
type Conditions []Condition

// ParseConditions reads a conditions field. "" (no conditions yet) and
// "null" are empty; anything but a JSON array of condition objects is an
// error wrapping [ErrInvalidConditions].
func ParseConditions(js string) (Conditions, error) {
	if js == "" {
		return nil, nil
	}
	var out Conditions
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConditions, err)
	}
	return out, nil
}

// Set returns cs with c replacing the condition of c.Type (appended when
// there is none). With a zero c.LastTransitionTime the time becomes now,
// truncated to the second, unless the status did not change: then the old
// condition's time is kept, so rewriting the same status moves no clock.
func (cs Conditions) Set(c Condition, now time.Time) Conditions {
	stamp := c.LastTransitionTime.IsZero()
	if stamp {
		c.LastTransitionTime = now.UTC().Truncate(time.Second)
	}
	out := make(Conditions, 0, len(cs)+1)
	found := false
	for _, old := range cs {
		if old.Type != c.Type {
			out = append(out, old)
			continue
		}
		found = true
		if stamp && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		out = append(out, c)
	}
	if !found {
		out = append(out, c)
	}
	return out
}

// Get returns the condition of type typ.
func (cs Conditions) Get(typ string) (Condition, bool) {
	for _, c := range cs {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

// JSON returns cs as the API stores it: a JSON array ("[]" when empty).
func (cs Conditions) JSON() string {
	if cs == nil {
		cs = Conditions{}
	}
	b, err := json.Marshal(cs)
	if err != nil {
		return "[]" // plain strings, a time and an int always marshal
	}
	return string(b)
}
