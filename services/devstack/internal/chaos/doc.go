// Package chaos is the chaos suite of issue 14 (`make chaos`, cmd/chaos): it
// runs the whole control plane as processes on one host, breaks it on a
// schedule while it drives API changes, and audits the result from outside.
//
// # The system
//
// Every part is a real process supervised by internal/proc (own process
// group, Pdeathsig, restart like a Deployment): three nats-server nodes
// clustered on loopback with JetStream (streams and buckets at R3), etcd and
// kube-apiserver with the chart's CRD and RBAC, the in-memory API with its
// fault endpoint, two replicas of informer, kube-reconciler, runner-manager
// and agui-proxy, and one event-tally. Ports come from one block below the
// kernel's ephemeral range, so every server restarts on its own port; logs,
// data and pid files live in the run directory.
//
// # The schedule
//
// Plan (pure, seeded) puts the faults one after the other and spreads the
// changes evenly until the end of the last one. The driver turns each
// planned change into an API call on an object picked from the model of
// what it asked for; starts and stops go through REST, where the API
// applies its phase guards, and the harness asks only what a user could
// (it reads the phase first). Witness sessions run from start to end and
// are never changed, so every fault meets runners it must leave alone.
//
// Besides kills and outages, a freeze stops a member's process group
// (SIGSTOP) past its lease or MEMBER_TTL and resumes it (SIGCONT): the
// informer holding the lease, a kube-reconciler, a runner-manager. It
// resumes with its handlers, timers and connections as they were, after a
// peer took over; the audit then reads the whole events stream for an
// event out of order (an older state after a newer one: a late publish of
// the old leader). A runner kill is kill -9 of one running session's
// runner: the session must end as runner-manager documents it (Failed,
// ProcessExited), its record released, never started again.
//
// A node freeze (the full run only) is a VM pause: runner-manager-1's
// process group and the process group of every runner of it (as the
// process table attributes runners: a workspace in its root) stopped
// together past MEMBER_TTL, then resumed together. Its peer sees the
// member gone, probes the frozen runners (they accept a connection and
// never answer), takes the claims over and starts the sessions again;
// on the thaw the old replica learns the claims are gone and kills its
// old runners without a write (services/runner-manager/internal/claim,
// "A paused node"). The harness reads the partitions and claims a moment
// before the thaw, times each old runner of a session taken over from the
// SIGCONT until it is gone, and watches the API for those sessions'
// changes after the thaw.
//
// A NATS node lost with its store (the full run only, after the node loss,
// whose store survives) is a pod rescheduled onto a new PersistentVolume:
// kill -9 of the events stream's leader, its store directory emptied while
// it is down, the node restarted under the same server name and routes.
// Every stream and bucket is R3, so it must take all of them back from its
// peers, and the replicated consumers it was a replica of (their delivery and
// ack state): the harness reads each one's cluster information (as its
// leader reports it; a stream without a leader counts nobody current)
// until the node leads it or follows it current with lag 0, within the fault's settle time after its readiness, again at the
// end, and records the leaders of the events stream and the meta group as
// they change meanwhile; losing or doubling nothing is the other checks'.
//
// Sessions over the payload limit (the full run only) are two sessions
// with 1.25 MiB of annotations, over NATS max_payload alone, made through
// the API like any other, one in a local and one in a kube project. The
// informer publishes only reference events of them, which consumers
// dead-letter, and flags them with the condition EventsPublished=False
// ObjectTooLarge. They stay over the limit beside the kills until both
// informers were killed and their leader frozen, so new leaders meet them;
// then the local one is made smaller through the API's update, and its
// next event must be a complete MODIFIED (never a second ADDED), the
// condition must go and the session converge. A watcher beside the
// schedule times the condition, its removal and the convergence, reads
// the lease holder (and its pid: a restarted leader's new term), and
// looks for AgenticSessions of either session and for runners of the kube
// one, which must never appear. The local one may get a runner while over the
// limit: runner-manager's resync reads sessions from the API, not from
// events. The kube one stays over the limit to the end: the audit wants
// it flagged, without an AgenticSession, runner or runner record, and
// exempts it from event-tally's count and from the objects bucket's
// comparison (its last event is a reference event).
//
// # The audit
//
// What is judged is only what an operator could see: the API, the process
// table (a runner of this run is the demo-runner program with a
// WORKSPACE_PATH under this run's workspace root; the root names the
// replica), KV ambient-runners, the Kubernetes API, event-tally's /tally,
// and a request through each agui-proxy. The process table is sampled every
// 100 ms for the whole run, which is how a session alive twice for a
// moment is caught. A runner in stopped state (T or t in /proc/<pid>/stat)
// serves nothing and is not live: the frozen node's old runner beside its
// successor is not a session run twice while it is stopped. After the
// thaw it is live again until its replica kills it: the samples in which
// a session taken over has its old, thawed runner and one new runner on
// the peer live, from the thaw until thawBound (5 s, about twenty times
// the slowest runner-manager measured) after it, are the thaw window,
// reported apart and not counted as twice; any other second runner is.
// An old runner alive past that bound, or at the end, fails the node
// freeze check, as does a change of such a session announced after the
// thaw that names the old runner (its ProcessSpawned pid) or ends the
// session, unless the harness stopped, started or deleted it: the
// API's watch shows what was written, not who wrote it, and those are
// what only the old runner's report can be. After the last fault the system is observed until
// every object is in its desired state and counted, or the converge
// timeout passes; the audit then judges that last observation.
//
// It also reads the informer's persisted cache, KV ambient-objects, and
// the whole events stream: per object, the bucket must hold the state of
// the object's last event (same version, event_seq that event's stream
// sequence) and no entry after a DELETED, since kube-reconciler's resync
// re-applies what the bucket holds and a stale entry (a deposed leader's
// late write, a store rebuild) would silently revert Kubernetes. A
// replayed dead letter (a copy of an older event for one consumer group)
// is no last event; an object whose last event is a reference event (over
// the payload limit: the bucket keeps the last state that fitted, or
// nothing) and an entry whose events aged out of the stream are exempt and
// counted. KV writes follow the acks without waiting and owed ones are
// retried, so while they disagree the bucket and what the stream gained
// are read again every second, for up to 30 s; what still disagrees fails
// the check.
//
// # Limits
//
// No operator runs. The harness stands in for its status writes (see
// operator): it sets status.sdkSessionId of a random AgenticSession now and
// then, and of six more while a killed kube-reconciler replica is down,
// those in its partitions first (sessions the schedule and the later
// status writes then leave alone, so each lives to the audit with that
// value; kube witnesses make sure some exist), and the
// audit checks that each kube session carries its CR's uid, namespace and
// that status (kube-reconciler's write-back, through the kills of its
// replicas). The last kube-reconciler killed stays down past MEMBER_TTL
// (--takeover-down), so its peer takes its partitions over; the statuses
// written in them must reach the API before it restarts. Kube sessions get
// no phase. event-tally is never killed (its
// tally lives in memory). A session created and deleted while no informer
// watched is never announced, by design (events carry states, not every
// change); the report counts them. PIDs are not checked for reuse within a
// run (pid_max is far above what a run spawns). The host is shared and
// loaded: timings in the report come with the load average.
package chaos
