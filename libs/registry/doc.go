// Package registry stores runner endpoint records in the JetStream KV bucket
// ambient-runners (bus.BucketRunners): one key per session, written by the
// runner-manager replica that owns the session and read by agui-proxy.
//
// Ownership is exactly-once through KV semantics:
//
//   - [Claim] creates the key (KV Create); a second claimer gets [ErrClaimed].
//   - [Register] rewrites the record with compare-and-swap on the revision the
//     caller last saw; it is also how a replica takes over a record left by a
//     dead owner (CAS on the stale revision, so only one taker wins).
//   - [Release] deletes the record, but only for its owner.
//
// A [Table] keeps an in-memory routing map from a KV watch for readers that
// need fast lookups (agui-proxy).
//
// The key of a session is [Key]: the session id escaped into a single token
// that never contains '.', so other key spaces (with a '.') can share the
// bucket without colliding.
package registry
