// Package claim is this replica's side of the runner registry (KV
// ambient-runners, libs/registry). A session runs on the replica whose
// claim record holds it: [Claims] creates claims (KV create: exactly one
// owner in the fleet), takes over the claims of owners that are gone
// (compare-and-swap on the stale record: exactly one taker), rewrites the
// records of this replica's runners, forwards stop requests to the owner's
// record, and releases claims.
//
// # Liveness and fencing
//
// Whether an owner is gone is decided in one place, [Claims.OwnerGone]
// (and [Claims.Scan], the same rule for a sweep over every record). This
// replica's own record is gone when no runner of it runs here (a previous
// incarnation's). A peer's record is gone only when all of these hold:
//
//   - this replica is settled ([Members.Settled]): it has reached NATS
//     without a break (no failed heartbeat, no reconnect, no gap between
//     two heartbeats longer than the TTL, as a pause of the process
//     makes) for longer than the TTL. A NATS outage longer than the TTL expires every heartbeat
//     in [BucketMembers]; right after it a live peer's key is missing
//     exactly as a dead one's, and the peer needs up to a TTL after its
//     own reconnect to write it again ([Members.Run] beats at once on a
//     reconnect);
//   - the peer has no heartbeat;
//   - the runner registered in the record does not answer GET /health
//     within the probe timeout (a live runner is not lost, whatever
//     happened to its replica's NATS connection). A 200 whose JSON body
//     names another session ("session_id", as the demo runner says) is the
//     port's new tenant, not this runner, and does not count;
//   - a record with no runner address yet (state claimed: the owner
//     registers the address right after the spawn) has nothing to probe,
//     and its owner may be starting the runner while cut off from NATS:
//     it counts only once this replica has seen it unchanged (same
//     revision) for the start wait ([WithStartWait]: the start deadline
//     plus a margin), on its own clock. The owner kills a runner it has
//     not registered within the start deadline of its claim, and spawns
//     none for a claim that old (package supervise), so by then no runner
//     of the claim runs. Before, such a claim was taken over at once and
//     the session ran twice while the owner was cut off;
//   - so is a record in state starting (the address is registered, the
//     runner has not passed its health check and may not listen yet): a
//     probe that fails proves nothing about a moment later, when the
//     runner may serve for an owner cut off from NATS. It counts only once
//     this replica has seen it unchanged for the start wait, and then only
//     if the runner still does not answer; the registration is a new
//     revision, so the wait starts again (the health deadline counts from
//     the spawn, up to the start deadline after the claim). The owner
//     kills a runner that is not healthy by its health deadline, without
//     waiting for the session's lock. Before, the probe decided at once,
//     and the session ran twice if the runner came up after it;
//   - so is a record in state stopping: a peer's stop request
//     ([Claims.RequestStop]) replaces the state the runner was in, and
//     the owner's registration keeps the request ([Claims.Update]), so
//     the record cannot tell a starting runner from a running one. The
//     request is a new revision, so the wait starts again; the owner
//     stops the runner when it hears of the request, or finds the session
//     Stopping at its Running write. Before, a stop request over a
//     starting record was probed at once: the peer took the claim over
//     and wrote Stopped while the cut-off owner's runner came up and
//     lived until its owner reconnected. A dead owner's stopping record
//     of a runner that did run waits the start wait too: that only delays
//     a Stopped, it starts nothing.
//
// Issue 14 finding 1 (two replicas, NATS down 15 s with a 5 s TTL: the
// first to reconnect took over all of its peer's sessions and ran each
// twice) is what the first and third rule prevent; either alone would.
// A replica cut off from NATS keeps its runners. When it is back, the
// sweep re-asserts its records: a record still its own stays, a record
// that vanished is written again ([Claims.Reassert], KV create: whoever
// wrote meanwhile wins), and only a record that another replica took
// over while it was away makes it stop that runner (supervise MarkLost).
//
// Runners die with their replica (Pdeathsig, and in a container the
// replica is PID 1; outside one Pdeathsig reaches only a runner's leader,
// and the replica's next incarnation ends the rest of its groups, package
// reconcile), so a dead replica's runners stop answering at once,
// and the survivors take over within: the dead replica's last heartbeat
// plus the TTL (the key expires), plus one sweep interval, plus one probe
// (a refused connection returns at once; an unreachable host costs the
// probe timeout, DefaultProbeTimeout; a sweep probes 8 records at a time,
// and recovers 8 at a time, each asking OwnerGone again); a record whose
// runner may still be starting (claimed, or starting) waits for its start
// wait (about 20 s by default) from the first sweep that saw it as well
// (so does a stopping one).
// With the
// defaults (MEMBER_TTL 5s, RUNNER_SWEEP_INTERVAL 5s) that is at most
// about 10 s before the takeover starts the session again; measured with
// MEMBER_TTL=1s and a 300 ms sweep: 2.7-2.9 s for 20 sessions, 2.3 s
// since the sweep recovers 8 at a time (internal/app
// TestKillReplicaSessionsMove). A replica that has just
// started (or reconnected) takes nothing over during its first TTL.
//
// # A paused node
//
// A whole node paused for longer than the TTL (a VM live-migration
// stall, a frozen cgroup, a node that is not scheduled) stops a replica
// and its runners together. Its peers see no heartbeat, and its runners
// accept a probe's connection but never answer it (each probe costs the
// probe timeout), so they take the sessions over and restart them, as for
// a dead replica. Measured (internal/app TestNodeFrozenSessionsMoveOnce,
// MEMBER_TTL=1s, 300 ms sweep, 5-8 sessions): every session Running on
// the peer 3.2-4.0 s after the freeze; 7.6-12.6 s while a sweep
// recovered its stale claims one after the other, each recovery probing
// the frozen runner again, and 11.4 s for 10 sessions when the resync,
// which took claims over one after the other too, ran first (the resync
// now leaves claims to the sweep).
//
// On the thaw the old runners resume beside the new ones, and the
// replica resumes believing it still owns their sessions. Its record
// watch delivers the takeovers as soon as it runs again, and each of
// those runners is killed at once without a write (supervise MarkLost):
// measured 20-141 ms (once 264 ms) from the thaw until the old runners'
// process groups were gone (about 25 runs on a loaded 2-core host), with
// no status write from the thawed replica after it. The sweep's
// ownership check (a record another replica holds stops the runner;
// Reassert for one that vanished) is the fallback for a watch that
// broke, e.g. on a connection the server closed during the pause (Scan
// then reads the bucket); the watch reopens with the reconnect, and
// until then nothing can tell whose a record is. There is no separate
// pause detection: a runner whose record may still be this replica's is
// never stopped, so nothing could act sooner than a read of the record,
// which is what the watch delivers.
//
// In the moment before the watch's news a lost runner may still end (its
// own timers fire when the node resumes, or a stop arrives), or a resync
// or event may find its phase "drifted" (the peer's Creating): the
// writes a replica makes for a runner without having just written the
// record itself (the final phase, a phase drift heal, and the sweep's
// retries of a final phase or a Creating/Running write that failed
// before the pause) are preceded by a read of the record (package supervise, takenOver), and a record another
// replica holds makes the runner lost: nothing is written, the new owner
// reports the session. A read that fails (NATS down; bounded to 1 s)
// tells nothing, and the write goes ahead as before.
//
// What the probe cannot tell: a runner whose /health body carries no
// session id, listening on a port that a dead replica's runner used on
// the same host, keeps that dead runner's session from moving until the
// port changes hands again. Runners bind ports from LOCAL_PORT_RANGE on
// their replica's advertised host; replicas on one host with overlapping
// ranges are the only way to get there (the pool skips busy ports, so a
// live replica never hands out a port another one uses).
//
// The heartbeat is not the consumer group's (libs/group keeps its own
// member heartbeats) for three reasons. A replica must look alive until
// its runners are stopped and their sessions reported, after it stopped
// taking events; group.Run leaves the group (deleting its heartbeat) as
// soon as intake stops, which is what moves partitions quickly, so peers
// would take over sessions whose runners are still in their stop grace.
// A member that rejoins its group (its consumer deleted, the events stream
// not there yet) is not a dead replica, and its runners live on. And the
// fencing above makes liveness stricter than group membership.
//
// # Bounded growth
//
// [Claims.Watch] keeps an index of the live records, which [Claims.Scan]
// reads instead of the bucket: a sweep costs what the live sessions cost,
// not what every session ever run did. A release purges the record with
// a marker that the server removes after the marker TTL
// ([WithMarkerTTL]; the bucket needs LimitMarkerTTL), and
// [Claims.ExpireMarkers] gives the never-expiring delete markers of
// older releases the same TTL, so the bucket holds only live records a
// TTL after the last release (issue 14 point 4: 11,850 markers after
// 4,000 sessions before).
package claim
