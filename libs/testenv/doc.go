// Package testenv starts real dependencies for tests: an embedded NATS
// server with JetStream (NATS, Conn, JetStream), a JetStream cluster of
// such servers started member by member (NewNATSCluster), the in-memory
// ambient API (API), and polling helpers (Eventually) so tests never sleep.
//
// Every helper takes testing.TB, calls t.Helper first, and tears down with
// t.Cleanup. Set NATS_LOGGING=debug to see the embedded server's logs for
// one run.
package testenv
