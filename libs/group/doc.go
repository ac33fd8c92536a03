// Package group is how every consuming service joins its consumer group on
// the events stream: Run(ctx, js, cfg, handler, log).
//
// # Partitioning (pcgroups)
//
// It builds on github.com/synadia-io/orbit.go/pcgroups elastic consumer
// groups (nats-server >= 2.11) rather than home-made locking. pcgroups
// creates a work-queue stream <Stream>-<Group> that sources the events
// stream through a subject transform {{Partition(n,3)}}, prepending a
// partition number computed by the server from the object id token of
// <prefix>.<resource>.<project>.<id> (FNV-1a mod n, see Partition). Each
// member gets one JetStream consumer, named after the member, filtered on
// its partitions, with a pinned-client priority group (only one instance of
// a member name consumes). Run creates it with MaxAckPending 1 and explicit
// acks, so one member handles one message at a time in stream order; a
// failed message is naked with a delay and, being still pending, holds back
// the member's later messages until it is redelivered. Together: one
// object's events are handled in order and by one member at a time.
//
// # Membership and failover
//
// pcgroups leaves membership to the operator: a member listed in the
// group's config keeps its partitions even when dead. Run therefore keeps a
// heartbeat key per member in the KV bucket ambient-members-<Stream>-<Group>
// (per-bucket TTL = Config.MemberTTL), renewed every MemberTTL/3. On every
// heartbeat each member also reconciles: it lists the live keys, computes
// the member mappings deterministically (pinned canary slices first, the
// rest split between the sharing members in name order), deletes the
// JetStream consumers of members whose key expired (a dead member cannot,
// and the work-queue stream refuses an overlapping consumer for the new
// owner until the old one is gone), and writes the mappings with a
// compare-and-swap on the config's revision. pcgroups in every live member
// watches that config and re-creates its consumer with the new partitions;
// because the stream is a work queue, unacked messages stay and the new
// owner starts from the oldest, in order.
//
// Failover time after a member dies is about MemberTTL + MemberTTL/3 + the
// consumer re-creation (~0.5 s): measured 1.1-1.6 s with MemberTTL 1 s in
// TestKilledMemberPartitionsMove, and 5.5-6.5 s with the defaults (5 s,
// AckWait 10 s). A graceful stop deletes the member's key and hands its
// partitions over at once. A joining member gets its share within one
// heartbeat, or, when its consumer create races the old owner's delete,
// after pcgroups' own retry (AckWait+0.5 s) or Run's watchdog (MemberTTL
// plus a heartbeat), whichever comes first. All members
// of a group must use the same Partitions, Resources, SubjectPrefix and
// MemberTTL.
//
// # Canary
//
// A member with Config.MemberPartitions owns exactly those partitions
// (PartitionOf tells which objects), so a fixed share of objects goes to
// the canary and an object does not flip between versions while the canary
// lives. When it stops (or dies) its partitions go back to the sharing
// members. While only canaries are alive, the remaining partitions wait
// (mapped to a placeholder nobody consumes as).
//
// # Outcomes
//
// nil -> confirmed ack; error -> NakWithDelay(Backoff[attempt-1]); error
// wrapped with Terminal, or MaxDeliver tries used -> the original data and
// headers plus Ambient-Dlq-* headers are published to
// <DLQPrefix>.<Group>.<subject without prefix> (DLQSubject), then Term. An
// undecodable message is dead-lettered at once. If the dead-letter publish
// fails the message is naked instead, so nothing is dropped. Delivery is at
// least once: a message in flight when its member dies, or when its
// partition moves during a rebalance, is handled again by the new owner,
// possibly while the old handler is still finishing; handlers must be
// idempotent (the reconcilers are level-triggered).
//
// # Limits
//
// Throughput per member is one message at a time (the price of ordering
// through retries); scale with members, up to Partitions. A new group
// starts from the beginning of the events stream (its max age, 72 h).
package group
