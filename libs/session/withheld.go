package session

import (
	"encoding/json"
	"strings"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// The condition the informer owns: EventsPublished=False says the
// session's state was not published (reason ReasonObjectTooLarge: it is
// over the event payload limit, so consumers got a reference event without
// the state, and dead-lettered it). The informer removes the condition once
// a version of the session is published complete again.
const (
	ConditionEventsPublished = "EventsPublished"
	ReasonObjectTooLarge     = "ObjectTooLarge"
)

// Withheld reports whether s carries EventsPublished=False: the state the
// API holds never reached the event consumers. A reconciler that reads
// sessions from the API besides its events (runner-manager's resync and
// runner checks) leaves such a session as its last published state, as the
// event path and kube-reconciler (which reads the informer's cache) do:
// otherwise a session over the payload limit would run in one mode and not
// in the other. Conditions that do not parse, or an entry that is not an
// object, count as not withheld: only the informer's own condition holds a
// session back.
func Withheld(s *ambientv1.Session) bool {
	conds := s.GetConditions()
	if !strings.Contains(conds, ConditionEventsPublished) {
		return false // the common case, without parsing
	}
	c, ok := FindCondition(conds, ConditionEventsPublished)
	return ok && c.Status == StatusFalse
}

// RawCondition is one entry of a conditions list as written, its time a
// string: reading it does not depend on what other writers put in the
// entry's other fields (ParseConditions refuses the whole list over one
// malformed time).
type RawCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
}

// FindCondition returns the first entry of type typ in conds (a
// conditions field). A field that is not a JSON list finds nothing; an
// entry that does not decode is skipped.
func FindCondition(conds, typ string) (RawCondition, bool) {
	var list []json.RawMessage
	if json.Unmarshal([]byte(conds), &list) != nil {
		return RawCondition{}, false
	}
	for _, raw := range list {
		var c RawCondition
		if json.Unmarshal(raw, &c) == nil && c.Type == typ {
			return c, true
		}
	}
	return RawCondition{}, false
}
