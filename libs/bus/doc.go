// Package bus connects services to NATS and declares the JetStream
// resources of the control plane: the events stream (AMBIENT_EVENTS, or a
// shadow stream for a canary informer), the dead-letter stream, and the KV
// buckets ambient-objects, ambient-runners and ambient-leases.
//
// Every Ensure function is idempotent: it creates the resource or updates
// it to the given config, so each service can call it at start-up and the
// last deployed settings win.
//
// [WatchKV] and [ReadKV] are the one way to watch or read a whole bucket:
// the current values first, then the changes, with the watch reopened (and
// the values delivered afresh) after it breaks.
package bus
