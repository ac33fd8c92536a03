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
	var list []json.RawMessage
	if json.Unmarshal([]byte(conds), &list) != nil {
		return false
	}
	for _, raw := range list {
		var c struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		}
		if json.Unmarshal(raw, &c) == nil && c.Type == ConditionEventsPublished {
			return c.Status == StatusFalse
		}
	}
	return false
}
