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
// a member name consumes). Run creates it with explicit acks and
// MaxAckPending = 2 x Config.MaxInFlight (see Backoff head-room below).
// Together with the lanes below: one
// object's events are handled in order and by one member at a time.
//
// # Lanes: many objects in flight, one handler per object
//
// A member runs up to MaxInFlight handler calls at once (default 64,
// GROUP_MAX_IN_FLIGHT), holds up to twice as many messages, and files each
// in its object's lane (object = the id token of the
// subject), which takes them in stream order. Delivery order is not always
// stream order (a consumer re-created by a rebalance loses what the server
// had just sent to the old subscription, and redeliveries come unordered),
// so while a delivery may be missing (for 2 AckWaits after a config
// rewrite or a gap in the consumer's numbering), a lane looks in the
// work-queue stream for an older unsettled message of the object before it
// starts one, and waits for it (order.go, TestLaneWaitsForOlderLostDelivery). Each lane with work
// runs one goroutine: the handler runs for at most one message of an object
// at a time, an object's later messages wait behind its earlier ones, and a
// slow or failing object holds back only its own messages. A failed try is
// retried in the lane after Backoff[attempt-1] (cenkalti/backoff), the
// message kept unacked: with more than one message pending a naked message
// would no longer block the object's later ones, which would overtake it
// (the old design, MaxAckPending 1, relied on exactly that). Every held
// message, running, queued or waiting out a backoff, is renewed with
// InProgress every AckWait/3, so a backoff longer than AckWait is fine and
// nothing is redelivered behind a lane's back. Should the server deliver a
// held message again anyway (our consumer was re-created by a rebalance or
// the watchdog), the lane settles the newest delivery, so the ack reaches
// the consumer that has it pending and nothing is handled twice
// (TestConsumerRecreatedUnderHeldMessages). A failed ack is retried while
// the lane waits; after AckWait without a confirmation the lane moves on
// and remembers the message as handled, so a redelivery of it is acked, not
// handled after the object's newer messages (TestUnconfirmedAckNotHandledTwice).
// A Term is never confirmed, so a dead-lettered message is remembered the
// same way: a redelivery after a lost Term is terminated, not handled and
// dead-lettered again (TestLostTermNotHandledAgain).
// A copy the server sent before a confirmed ack reached it (renewals lost
// with a reconnect) can still arrive after the lane settled the message: a
// member remembers the acks of messages it held for AckWait/2 or longer,
// for one to two AckWaits, and acks such a copy without handling it
// (TestStaleRedeliveryAfterAckNotHandled).
// While the connection is down lanes start no handler call: the member
// could not ack, and its messages may go to another member.
//
// With Config.Coalesce (for level-triggered handlers, which read the
// newest state anyway), the messages of an object that queued up behind
// its running handler are handled by one call with the newest of them
// (Message.Coalesced counts the others) and all are acked after it
// succeeds (TestCoalesceQueuedEvents). A failure is retried with the
// messages that queued up meanwhile taken in: the retry is for the
// object's newest state, so a change that mends the failure is handled at
// the next try instead of after the stale message used up its tries.
// Message.Attempt goes on counting (the object's failures in a row), and
// after MaxDeliver tries all of them are dead-lettered together
// (TestRetryTakesNewerEvents, TestRetryTakingNewerEventsStillDeadLetters).
// A call never stands for a
// message whose older one is missing (lost in transit, due as a
// redelivery): the batch ends before it, and it waits as a head does
// (TestCoalescedBatchStopsAtLostEvent).
//
// # Backoff head-room
//
// A lane waiting out a retry backoff keeps its message unacked (above), so
// with MaxAckPending = MaxInFlight, MaxInFlight objects failing at once
// (one tenant's broken objects, a dependency down for one project) held
// every other object of the member's partitions back for the whole
// backoff. So a lane takes one of MaxInFlight handler slots only while a
// try runs, not while it waits for the next, and the consumer has
// MaxInFlight more pending messages of head-room: the member's other
// objects are handled while up to MaxInFlight lanes wait out a backoff
// (TestBackoffDoesNotStallOtherObjects), and never more than MaxInFlight
// handler calls run (TestHandlerCallsBoundedByMaxInFlight). Bounded: with
// 2 x MaxInFlight messages in lanes that wait, the member waits as before.
// Order, retries and dead letters are unchanged. With
// Config.ParkFailures (a service whose resync repairs a lost event) that
// bound goes too: once lanes in backoff hold MaxInFlight messages, a lane
// whose try fails acks its messages and keeps them in memory for its
// retries, and parks the object's messages that arrive while it waits
// (park.go; TestParkedFailuresDoNotStallOtherObjects). The head-room is not
// reserved for backoffs: a member whose handlers are all busy holds up to
// MaxInFlight more messages queued in their lanes (consumer_group.in_flight
// up to 2 x MaxInFlight, consumer_group.lag that much lower). Each member's
// consumer is its own, so members of an older version (MaxAckPending =
// MaxInFlight) run beside it unchanged; a member restarted under its name
// across the upgrade finds its consumer with the other config, and
// pcgroups deletes and re-creates it (its pending messages are delivered
// again from the work queue, in order, their tries counted from 1 again),
// as when GROUP_MAX_IN_FLIGHT changes.
//
// Measured (BenchmarkThroughput, one member, handler latency 2 ms, 64
// objects x 8 events, load average 11-14 on 2 cores): MaxInFlight 1 288-312
// events/s, MaxInFlight 64 3,700-4,300 events/s (about 13x). Tests:
// TestSlowObjectDoesNotBlockOthers, TestFailingObjectRetriesInPlace,
// TestRebalanceMidLaneLosesAndReordersNothing.
//
// # Membership and failover
//
// pcgroups leaves membership to the operator: a member listed in the
// group's config keeps its partitions even when dead. Run therefore keeps a
// heartbeat key per member in the KV bucket ambient-members-<Stream>-<Group>
// (per-bucket TTL = Config.MemberTTL, raised but never lowered: a member
// configured lower beats, fences and runs its watchdog by the bucket's
// TTL, TestMembersBucketTTLNeverLowered, TestWatchdogUsesBucketTTL),
// renewed every MemberTTL/3 on a goroutine of its own, so liveness never
// waits for the work below. After
// each heartbeat each member also reconciles: it lists the live keys, computes
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
// consumer re-creation (~0.5 s): measured 1.0-1.6 s with MemberTTL 1 s in
// TestKilledMemberPartitionsMove, and 5.5-6.5 s with the defaults (5 s,
// AckWait 10 s). A graceful stop deletes the member's key and hands its
// partitions over at once; so does Run failing after the join (a failed
// config watch, work-queue stream lookup or first consume:
// TestRunFailingAfterJoinLeavesGroup).
//
// # Fencing: an outage is not a death
//
// A NATS outage longer than MemberTTL expires every member's key at once,
// so the first member to reconnect would see its peers as dead and take
// all partitions (issue 14). A member therefore counts a peer dead only
// after it has itself reached JetStream without a break for a whole
// MemberTTL (a failed heartbeat or a reconnect starts the count again;
// so does joining); until then it keeps the mapping as it is, joins
// included. A member heartbeats the moment it reconnects, so peers that
// come back within a TTL of each other keep their partitions:
// TestOutageIsNotADeath stops NATS for 1.5 x TTL (TTL 2 s), the peer is
// back 0.05-0.9 s after the restart and the group config is not rewritten
// at all. A peer that does not come back loses its partitions a TTL after
// the survivor's reconnect (measured 2.2 s after the restart with TTL 2 s).
// The cost: a member that starts, or reconnects, when a peer really died
// takes over up to one MemberTTL later than it otherwise would.
//
// # Partition moves cancel the old owner's work
//
// Run watches the group's config itself: when a partition moves away,
// the ctx of every handler still running on it is cancelled with cause
// ErrPartitionMoved (measured 60-340 ms after the new member started in
// TestHandlerCancelledWhenPartitionMoves) and its lane's messages are
// released, not acked or retried, so the new owner handles them again, in
// order. Messages delivered
// for a partition this member no longer owns are released without
// calling the handler. A partition moving between two live members is
// handed off in two config writes (handoff.go): revoked first, granted to
// its new owner only once the old owner reports, in its heartbeat, that
// it applied the revocation and no work on it still runs (a handler deaf
// to its ctx is waited for up to StopGrace).
//
// # Readiness: cut off from a dependency, not from NATS
//
// A member cut off from what its handler needs (runner-manager and
// kube-reconciler from the ambient API) while NATS still reaches it keeps
// heartbeating, so it used to keep its partitions, and their events waited
// (its handler's retries stalled) until the dependency came back or a
// peer's periodic resync (1 minute) did the work. With Config.Ready the
// member tells: once Ready has failed for Config.NotReadyAfter (default
// 10 s, GROUP_NOT_READY_AFTER) without a break, its heartbeat says
// not_ready, and the partitions are shared among the ready members only
// (takers in assign.go). It reports ready again at its first heartbeat
// after Ready passes and takes its share back. Both moves are the hand-offs
// above (revoked, then granted once released), so per-object order and
// at-least-once hold; the not-ready member's running handlers see their
// ctx cancelled with ErrPartitionMoved. Ready is asked at every heartbeat
// (MemberTTL/3), so it must be cheap.
//
// An outage common to all moves nothing: while no sharing member is both
// ready and settled (Ready passing for NotReadyAfter without a break since
// it joined or last failed), every live member takes its share as if all
// were ready. A member just back from failing is not settled yet, so the
// members of a common outage, reconnecting a few seconds apart after it,
// do not hand each other their partitions either
// (TestReadinessMovesPartitions). Pinned members (MemberPartitions, a
// canary) keep their pins whatever their readiness. A record without the
// field (a version before readiness) reads as ready.
//
// # Replicas
//
// Every stream and bucket the group creates gets Config.Replicas
// (GROUP_REPLICAS; 0 = the events stream's count, read once that stream
// exists) whatever the start order: the work-queue stream and the member
// bucket exactly, the shared AMBIENT_DLQ stream and pcgroups' config bucket
// at least (they are shared with other groups, so they are never lowered).
// Existing ones are updated on join; JetStream moves the data itself
// (TestReplicasWhateverStartOrder, on a 3-node cluster). A joining member gets its share within one
// heartbeat, or, when its consumer create races the old owner's delete,
// after pcgroups' own retry (AckWait+0.5 s) or Run's watchdog (MemberTTL
// plus a heartbeat), whichever comes first. Joining retries, with
// backoff, what a JetStream cluster answers for a moment (no responders
// from a stream created a moment ago, "temporarily unavailable" during an
// election) instead of failing Run. All members
// of a group must use the same Partitions, Resources, SubjectPrefix and
// MemberTTL.
//
// # Canary
//
// A member with Config.MemberPartitions owns exactly those partitions
// (PartitionOf tells which objects), so a fixed share of objects goes to
// the canary and an object does not flip between versions while the canary
// lives. When it stops (or dies) its partitions go back to the sharing
// members; while it is not ready it keeps them (see Readiness). While only canaries are alive, the remaining partitions wait
// (mapped to a placeholder nobody consumes as).
//
// # Outcomes
//
// nil -> confirmed ack; error -> another try in the lane after
// Backoff[attempt-1]; error wrapped with Terminal, or MaxDeliver tries used
// -> the original data and
// headers plus Ambient-Dlq-* headers are published to
// <DLQPrefix>.<Group>.<subject without prefix> (DLQSubject), then Term. An
// undecodable message is dead-lettered at once. JetStream counts deliveries
// per consumer, so the tries of an earlier holder count only when the same
// consumer delivers the message again: a member killed and restarted under
// its name before its consumer was deleted (TestRestartedMemberGoesOnCountingTries).
// A graceful stop deletes the member's consumer, and another member's
// consumer starts at 1, so a message can get up to MaxDeliver tries from
// each consumer that holds it. If the dead-letter publish
// fails it is retried in the lane, so nothing is dropped. Delivery is at
// least once: a message in flight when its member dies, or when its
// partition moves during a rebalance, is handled again by the new owner,
// possibly while the old handler is still finishing (its ctx is cancelled,
// see above); handlers must be idempotent (the reconcilers are
// level-triggered).
//
// # Limits
//
// Throughput per member is MaxInFlight objects at a time, one message per
// object; scale further with members, up to Partitions. Handlers must be
// safe for concurrent use across objects. A message waiting in a lane
// counts against the consumer's 2 x MaxInFlight, so a member with that
// many messages in failing objects' lanes waits like one whose handler is
// slow. A new group starts from the beginning of the events stream (its
// max age, 72 h).
package group
