package registry

import (
	"strings"

	"github.com/ambient-code/control-plane/libs/events"
)

// Key returns the KV key of a session: events.EscapeToken(sessionID), a single
// token of [A-Za-z0-9_-] that is reversible and maps "" to "_".
func Key(sessionID string) string { return events.EscapeToken(sessionID) }

// isSessionKey reports whether a KV key belongs to the session key space
// (other key spaces in the bucket contain a '.').
func isSessionKey(k string) bool { return !strings.Contains(k, ".") }
