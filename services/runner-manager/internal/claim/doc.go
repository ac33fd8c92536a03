// Package claim is this replica's side of the runner registry (KV
// ambient-runners, libs/registry). A session runs on the replica whose
// claim record holds it: [Claims] creates claims (KV create: exactly one
// owner in the fleet), takes over the claims of owners that are gone
// (compare-and-swap on the stale record: exactly one taker), rewrites the
// records of this replica's runners, forwards stop requests to the owner's
// record, and releases claims.
//
// # Liveness
//
// Whether an owner is gone is decided in one place, [Claims.OwnerGone]
// (and [Claims.Scan] for a sweep over every record). Today an owner is gone
// when it has no heartbeat in [BucketMembers] (a TTL bucket; [Members]
// writes this replica's), or, for this replica's own claims, when no runner
// of it runs here (a previous incarnation's). Runners die with their
// replica (Pdeathsig), so a gone owner's runner is gone too.
//
// The heartbeat is not the consumer group's (libs/group keeps its own
// member heartbeats) for three reasons. A replica must look alive until
// its runners are stopped and their sessions reported, after it stopped
// taking events; group.Run leaves the group (deleting its heartbeat) as
// soon as intake stops, which is what moves partitions quickly, so peers
// would take over sessions whose runners are still in their stop grace.
// A member that rejoins its group (its consumer deleted, the events stream
// not there yet) is not a dead replica, and its runners live on. And the
// fencing below makes liveness stricter than group membership.
//
// # Fencing (issue 14, not done yet)
//
// A NATS outage longer than the TTL today looks exactly like a dead
// replica. The fix belongs here and nowhere else: OwnerGone (and Scan)
// also probe the registered runner endpoint (a runner that answers is not
// lost) and count a peer dead only after this replica has itself been
// connected for longer than the TTL; and instead of killing its runners
// when their records moved (supervise.Runner.MarkLost via the record
// watch and the sweep), a replica that lost NATS re-asserts its claims on
// reconnect (a Claims method beside Update).
package claim
