package group

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"

	"github.com/ambient-code/control-plane/libs/events"
)

// Defaults for Config; services mirror them in their Helm values.
const (
	DefaultPartitions = 16
	DefaultMaxDeliver = 5
	DefaultAckWait    = 10 * time.Second
	DefaultMemberTTL  = 5 * time.Second
	DefaultStopGrace  = 10 * time.Second
	// DefaultMaxInFlight lets a member work on up to 64 objects at once,
	// the concurrency client-go's workqueue users typically run.
	DefaultMaxInFlight = 64
	// DefaultNotReadyAfter is long enough that a blip (one refused
	// connection, an API restart) moves no partition, and short against
	// the periodic resyncs (1 minute) that pick up what a cut-off member's
	// partitions would otherwise hold back.
	DefaultNotReadyAfter = 10 * time.Second
)

// DefaultBackoff is the retry schedule (see Config.Backoff); attempt n
// waits Backoff[min(n-1, len-1)].
var DefaultBackoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute}

// nameRE restricts group and member names to what is valid in a stream,
// consumer and KV bucket name and a subject token. A leading '_' is
// reserved for unassignedMember.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// Config describes one member of a consumer group. Stream, SubjectPrefix,
// Group, Resources, Partitions and MemberTTL are group-wide and must be the
// same for every member; Member and MemberPartitions are per member.
type Config struct {
	// Stream is the events stream (default events.StreamName; a shadow
	// informer's consumers use events.ShadowStreamName).
	Stream string
	// SubjectPrefix of the events in Stream (default events.SubjectPrefix).
	SubjectPrefix string
	// Group names the consumer group, one per service (e.g. "kube-reconciler").
	Group string
	// Member is this instance's stable identity (pod name, from env).
	// Restarting with the same name takes back the same partitions if the
	// restart is quicker than MemberTTL.
	Member string
	// Resources limits the group to these resources (empty = all).
	Resources []eventsv1.Resource
	// Partitions is the number of partitions objects are hashed into by
	// their id token (default 16); also the maximum number of members.
	Partitions int
	// MemberPartitions pins this member to exactly these partitions (a
	// canary). Empty means the member shares the partitions left over by
	// pinned members with the other sharing members.
	MemberPartitions []int
	// MaxDeliver is the number of tries before the message goes to the DLQ
	// (default 5).
	MaxDeliver int
	// Backoff is the wait before each retry in the lane: attempt n waits
	// Backoff[min(n-1, len-1)] (default DefaultBackoff). A failed
	// dead-letter publish is retried with it too. Every wait must be > 0.
	Backoff []time.Duration
	// AckWait is the redelivery timeout of an unacknowledged message; long
	// handlers are kept alive with InProgress (default 10s). pcgroups also
	// derives the pinned-client TTL and idle consumer timeout from it.
	AckWait time.Duration
	// DLQPrefix is the dead-letter subject prefix (default events.DLQPrefix).
	DLQPrefix string
	// MemberTTL is how long a member stays in the group without a
	// heartbeat; it bounds failover time (default 5s). It is the TTL of
	// the group's members bucket, which is raised but never lowered: a
	// member configured below the bucket's TTL beats, fences and runs its
	// watchdog by the bucket's.
	MemberTTL time.Duration
	// StopGrace bounds the wait for an in-flight handler on stop; after it
	// the handler's ctx is cancelled and the message is released (default 10s).
	StopGrace time.Duration
	// Stats, when set, counts deliveries, acks, retries and dead letters
	// (default: a fresh Stats per Run).
	Stats *Stats
	// Meter, when set, exports Stats as the consumer_group.* metrics (see
	// MetricHandled and the others), labelled with the group.
	Meter metric.Meter
	// TracerProvider makes the CONSUMER span around every handler call
	// (nil: the OTel global provider, which telemetry.Setup installs).
	TracerProvider trace.TracerProvider
	// MaxInFlight is how many handler calls the member runs at once: the
	// messages it holds are dispatched to one lane per object (the id
	// token of the subject), and the handler runs for at most one message
	// per object at a time, in stream order, so up to MaxInFlight objects
	// are handled concurrently (default 64; 1 handles one message at a
	// time, as before). The member holds up to twice as many messages
	// (the consumer's MaxAckPending, see maxAckPending): the second half
	// is head-room for lanes waiting out a retry backoff, which take no
	// handler slot meanwhile.
	MaxInFlight int
	// Coalesce, for level-triggered handlers that read the newest state
	// anyway: the messages of one object that queued up behind its running
	// handler are handled by one call with the newest of them
	// (Message.Coalesced says how many older ones it stands for), and all
	// of them are acked after it succeeds. A batch ends before a message
	// whose older one is missing, which then waits for it.
	Coalesce bool
	// ParkFailures, with Coalesce, for services that repair an object
	// whose event was lost (a periodic resync of every object, as
	// kube-reconciler's): when
	// lanes waiting out a retry backoff hold MaxInFlight messages (the
	// consumer's head-room, see maxAckPending), a lane whose try fails
	// acks its messages and keeps them in memory for its retries
	// ("parks" them), so the member's other objects go on being delivered
	// however many of its objects fail at once. The object's order, its
	// retries, Message.Attempt and the dead letter after MaxDeliver tries
	// are as before; a parked event given up by a stop or a move is
	// published again for the group (HeaderReplayGroup), and one lost
	// with a crashed member is the resync's to repair. At most
	// maxParked objects are parked at once; past it lanes wait holding
	// their messages, as without it.
	ParkFailures bool
	// Replicas is the replica count of every stream and bucket the group
	// creates: the group's work-queue stream and member bucket (set to
	// exactly this), the shared dead-letter stream and pcgroups' config
	// bucket (raised to at least this, never lowered, because other groups
	// share them). Existing ones are updated on join. 0 means the events
	// stream's replica count, read once that stream exists, so the start
	// order of the informer and the consumers does not matter. Group-wide:
	// members with different values undo each other's updates.
	Replicas int
	// Assignment, when set, is kept equal to this member's partitions while
	// Run runs (see Assignment).
	Assignment *Assignment
	// OnDeadLetter, when set, is called once the handler's message (with
	// the coalesced ones it stood for) is in the DLQ: after MaxDeliver
	// tries or a Terminal error, with the DLQ reason and the handler's
	// last error. It is where a service reports the failure on the object
	// (a session condition), beside the log and metric the group writes.
	// It runs in the object's lane, so the object's next message waits for
	// it: keep it bounded. Not called for undecodable messages (there is
	// no event to report on). A panic in it is logged and the lane goes
	// on: the letter is in the DLQ already.
	OnDeadLetter func(ctx context.Context, m Message, reason string, cause error)
	// Ready, when set, tells whether this member can act on its events now
	// (nil error: it can); runner-manager and kube-reconciler report
	// whether their API client reaches the API. A member whose Ready has
	// failed for NotReadyAfter without a break says so in its heartbeat,
	// and its shared partitions go to the ready members while one is (see
	// the package doc, Readiness); it says it is ready again at its first
	// heartbeat after Ready passes. It is called at every heartbeat
	// (MemberTTL/3) on the heartbeat's goroutine, so it must be cheap and
	// must not block: a read of state the member keeps anyway, not a call
	// to the dependency. nil: always ready, as before.
	Ready func() error
	// NotReadyAfter is how long Ready must fail without a break before the
	// member reports itself not ready, and how long it must then pass
	// before the member counts as a ready peer that takes over the
	// partitions of not-ready ones (default 10s): shorter blips, and the
	// members of an outage common to all reconnecting seconds apart, move
	// nothing.
	NotReadyAfter time.Duration
}

// WithDefaults returns c with every zero field set to its default (see the
// field docs) and checks it as Run does; the error wraps ErrInvalidConfig
// and names each bad field. Run calls it; callers that hand the Config to
// others (the service runtime) call it to fail early.
func (c Config) WithDefaults() (Config, error) {
	if c.Stream == "" {
		c.Stream = events.StreamName
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = events.SubjectPrefix
	}
	if c.DLQPrefix == "" {
		c.DLQPrefix = events.DLQPrefix
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if len(c.Backoff) == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MemberTTL == 0 {
		c.MemberTTL = DefaultMemberTTL
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.NotReadyAfter == 0 {
		c.NotReadyAfter = DefaultNotReadyAfter
	}
	if c.Stats == nil {
		c.Stats = &Stats{}
	}
	if len(c.Resources) == 0 {
		c.Resources = events.Resources
	}
	c.Resources = slices.Clone(c.Resources)
	c.MemberPartitions = slices.Clone(c.MemberPartitions)
	slices.Sort(c.MemberPartitions)
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrInvalidConfig)...))
	}
	for name, v := range map[string]string{"stream": c.Stream, "group": c.Group, "member": c.Member} {
		if !nameRE.MatchString(v) {
			bad("%s %q: want letters, digits, '-' or '_', not starting with '_'", name, v)
		}
	}
	for name, v := range map[string]string{"subject prefix": c.SubjectPrefix, "dlq prefix": c.DLQPrefix} {
		if !events.ValidPrefix(v) {
			bad("%s %q: want %s", name, v, events.PrefixForm)
		}
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		bad("partitions %d: want 1..%d", c.Partitions, MaxPartitions)
	}
	for i, p := range c.MemberPartitions {
		if p < 0 || p >= c.Partitions {
			bad("member partition %d: want 0..%d", p, c.Partitions-1)
		}
		if i > 0 && c.MemberPartitions[i-1] == p {
			bad("member partition %d listed twice", p)
		}
	}
	for _, r := range c.Resources {
		if events.ResourceToken(r) == "" {
			bad("resource %v: unknown", r)
		}
	}
	if c.MaxDeliver < 1 || c.MaxDeliver > MaxMaxDeliver {
		bad("max deliver %d: want 1..%d", c.MaxDeliver, MaxMaxDeliver)
	}
	// A zero wait makes retries a hot loop: a failing handler burns its
	// MaxDeliver tries at once, before anything transient can clear, and a
	// dead-letter publish the DLQ stream refuses (full, discard new) is
	// retried with this schedule and no limit, spinning its lane and logging
	// an error per round trip (over 1,000 a second).
	for _, d := range c.Backoff {
		if d <= 0 {
			bad("backoff %s: want > 0", d)
		}
	}
	if c.AckWait < MinAckWait {
		bad("ack wait %s: want >= %s", c.AckWait, MinAckWait)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > MaxMaxInFlight {
		bad("max in flight %d: want 1..%d", c.MaxInFlight, MaxMaxInFlight)
	}
	// A parked event released with a newer one of its object is dropped
	// for the newer (republishParked): right only for a handler that
	// reads the object's newest state, as a coalescing one does.
	if c.ParkFailures && !c.Coalesce {
		bad("park failures: want coalesce too (a level-triggered handler)")
	}
	if c.Replicas < 0 || c.Replicas > MaxReplicas {
		bad("replicas %d: want 0 (as the events stream) or 1..%d", c.Replicas, MaxReplicas)
	}
	if c.NotReadyAfter < 0 {
		bad("not ready after %s: want > 0", c.NotReadyAfter)
	}
	if c.MemberTTL < MinMemberTTL || c.StopGrace < 0 {
		bad("member ttl %s / stop grace %s: want ttl >= %s, grace >= 0", c.MemberTTL, c.StopGrace, MinMemberTTL)
	}
	return errors.Join(errs...)
}

// backoff returns the delay before the next try after the given attempt
// (1-based).
func (c Config) backoff(attempt uint64) time.Duration {
	i := min(int(max(attempt, 1))-1, len(c.Backoff)-1)
	return c.Backoff[i]
}

// maxAckPending is the consumer's MaxAckPending: MaxInFlight messages for
// the handler calls, and as many again as head-room for lanes waiting out
// a retry backoff. A lane keeps its failed message unacked through the
// backoff (so the object's later messages cannot overtake it), and with
// only MaxInFlight pending, MaxInFlight failing objects (one tenant's
// broken objects) held every message of the member's partitions back for
// the whole backoff. Bounded, so memory, renewals and a move's releases
// stay bounded: with 2 x MaxInFlight messages waiting, the member stalls
// as before. Each member's consumer is its own (named after the member),
// so members of older versions keep MaxInFlight beside it; pcgroups
// re-creates a consumer left with another config under the same name.
func (c Config) maxAckPending() int { return 2 * c.MaxInFlight }

// maxParked bounds the objects whose failed work a member parks at once
// (Config.ParkFailures): each is a lane goroutine waiting out its backoff
// with its messages in memory. 16 x MaxInFlight (1,024 by default) covers
// a tenant's worth of objects failing together; past it the member stalls
// as without parking rather than growing without bound.
func (c Config) maxParked() int { return 16 * c.MaxInFlight }

// heartbeat is how often a member renews its liveness key and reconciles
// the membership: three renewals per TTL, so one lost write never expires
// a live member.
func (c Config) heartbeat() time.Duration { return c.MemberTTL / 3 }

// Defaults DLQSubject falls back on for a Config that skipped WithDefaults.
const (
	defaultSubjectPrefix = events.SubjectPrefix
	defaultDLQPrefix     = events.DLQPrefix
)
