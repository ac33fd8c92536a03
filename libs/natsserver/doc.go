// Package natsserver runs an embedded nats-server with JetStream, for tests
// and for the single-process dev stack.
//
// A Server keeps its store directory and, after the first start, its client
// port, so Restart brings back the same JetStream state on the same URL and
// connected clients reconnect on their own. Logging is off unless
// Options.Logging is set; the package never reads the environment (callers
// such as libs/testenv decide, e.g. from NATS_LOGGING=debug).
package natsserver
