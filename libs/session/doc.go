// Package session is the vocabulary every service uses for an ambient
// session: its [Phase] (the seven phases the API accepts, which of them are
// terminal, which allow a start or a stop), its conditions ([Condition],
// [Conditions]: the JSON array the API stores in a session's conditions
// field), the [Selector] that places a session on an executor
// (kube-reconciler's AgenticSessions or runner-manager's local runners),
// and its repositories ([Repos]) and environment variables
// ([EnvironmentVariables]), which both executors read alike, with one
// decoder for the JSON the API stores in a session's fields ([DecodeJSON]).
//
// The phases and the start/stop guards are the real ambient-api-server's
// (shared/design/UPSTREAM-BEHAVIOUR.md); libs/memapi enforces them with
// these helpers, and the reconcilers decide with them.
//
// Everything here is a value type without I/O; all of it is safe for
// concurrent use.
package session
