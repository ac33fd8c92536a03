// Package runner is the process manager of runner-manager: it allocates a
// port and a workspace per session, starts the runner command in its own
// process group with an allow-listed environment, polls its health, and
// stops it (SIGTERM to the group, SIGKILL after a grace period).
//
// It knows nothing about NATS or the API; package reconcile drives it.
package runner
