package group

import (
	"fmt"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
)

// Environment variables read by [LoadConfig]: the same names, ranges and
// defaults in every consuming service.
const (
	EnvSubjectPrefix    = "SUBJECT_PREFIX"
	EnvStream           = "EVENTS_STREAM"
	EnvGroup            = "CONSUMER_GROUP"
	EnvMemberID         = "MEMBER_ID"
	EnvPartitions       = "GROUP_PARTITIONS"
	EnvMemberPartitions = "GROUP_MEMBER_PARTITIONS"
	EnvMaxDeliver       = "GROUP_MAX_DELIVER"
	EnvAckWait          = "GROUP_ACK_WAIT"
	EnvMemberTTL        = "MEMBER_TTL"
	EnvReplicas         = "GROUP_REPLICAS"
	EnvMaxInFlight      = "GROUP_MAX_IN_FLIGHT"
	EnvNotReadyAfter    = "GROUP_NOT_READY_AFTER"
)

// Limits of the group knobs, checked by [Run] and by [LoadConfig] alike.
const (
	// MaxPartitions bounds Partitions (and so the number of members).
	MaxPartitions = 1024
	// MaxMaxDeliver bounds MaxDeliver: with DefaultBackoff, 1000 tries span
	// about 33 hours, within the events stream's 72-hour max age.
	MaxMaxDeliver = 1000
	// MinAckWait: pcgroups derives a pull expiry of AckWait/2 with a 1s
	// floor; a shorter AckWait makes the pinned member flap.
	MinAckWait = time.Second
	// MinMemberTTL keeps three heartbeats per TTL above 100ms apart.
	MinMemberTTL = 300 * time.Millisecond
	// MaxReplicas is JetStream's own limit on a stream's replicas.
	MaxReplicas = 5
	// MaxMaxInFlight bounds MaxInFlight: each held message (up to twice
	// MaxInFlight) is renewed (InProgress) every AckWait/3, and each object
	// in flight may run a goroutine.
	MaxMaxInFlight = 4096
)

// nameForm describes a valid stream or group name, for configuration errors.
const nameForm = `letters, digits, "-" and "_", starting with a letter or digit`

// LoadConfig reads one member's Config through l. def carries the service's
// defaults: at least Group, and any of Stream, SubjectPrefix, Partitions,
// MaxDeliver, AckWait, MemberTTL, MaxInFlight, NotReadyAfter and Replicas
// that differ from this package's defaults (a zero field takes the package
// default; Replicas 0 follows the events stream). Fields no variable sets
// (Resources, Backoff, DLQPrefix, StopGrace, Coalesce, Stats, Meter, Ready)
// are copied from def. Every problem is recorded in l, naming its variable, so the
// caller reports them with the rest of its configuration through l.Err.
func LoadConfig(l *envconfig.Loader, def Config) Config {
	c := def
	c.SubjectPrefix = l.String(EnvSubjectPrefix, orDefault(def.SubjectPrefix, events.SubjectPrefix))
	c.Stream = l.String(EnvStream, orDefault(def.Stream, events.StreamName))
	c.Group = l.String(EnvGroup, def.Group)
	c.Member = LoadMemberID(l, EnvMemberID)
	c.Partitions = l.Int(EnvPartitions, orDefault(def.Partitions, DefaultPartitions), 1, MaxPartitions)
	c.MemberPartitions = l.IntSet(EnvMemberPartitions, c.Partitions)
	c.MaxDeliver = l.Int(EnvMaxDeliver, orDefault(def.MaxDeliver, DefaultMaxDeliver), 1, MaxMaxDeliver)
	c.AckWait = l.Duration(EnvAckWait, orDefault(def.AckWait, DefaultAckWait))
	c.MemberTTL = l.Duration(EnvMemberTTL, orDefault(def.MemberTTL, DefaultMemberTTL))
	c.Replicas = l.Int(EnvReplicas, def.Replicas, 1, MaxReplicas)
	c.MaxInFlight = l.Int(EnvMaxInFlight, orDefault(def.MaxInFlight, DefaultMaxInFlight), 1, MaxMaxInFlight)
	c.NotReadyAfter = l.Duration(EnvNotReadyAfter, orDefault(def.NotReadyAfter, DefaultNotReadyAfter))

	if !events.ValidPrefix(c.SubjectPrefix) {
		l.Invalid(EnvSubjectPrefix, events.PrefixForm, c.SubjectPrefix, nil)
	}
	if !ValidName(c.Stream) {
		l.Invalid(EnvStream, "a stream name of "+nameForm, c.Stream, nil)
	} else if why := ReservedStream(c.Stream); why != "" {
		l.Invalid(EnvStream, "an events stream's name, not "+why, c.Stream, nil)
	}
	// The live stream captures exactly the live prefix (what the informer
	// enforces on its side): a consumer of it with another prefix would
	// filter on subjects no event has and count nothing, ready.
	if (c.Stream == events.StreamName) != (c.SubjectPrefix == events.SubjectPrefix) {
		l.Invalid(EnvSubjectPrefix, fmt.Sprintf("%q exactly when %s is %q (a shadow consumer sets both)", events.SubjectPrefix, EnvStream, events.StreamName), c.SubjectPrefix, nil)
	} else if c.Stream != events.StreamName {
		if why := PrefixOverlap(c.SubjectPrefix); why != "" {
			l.Invalid(EnvSubjectPrefix, "a shadow stream's own prefix, not one that "+why, c.SubjectPrefix, nil)
		}
	}
	if !ValidName(c.Group) {
		l.Invalid(EnvGroup, "a group name of "+nameForm, c.Group, nil)
	}
	if c.AckWait < MinAckWait {
		l.Invalid(EnvAckWait, fmt.Sprintf("a duration of at least %s", MinAckWait), c.AckWait.String(), nil)
	}
	if c.NotReadyAfter <= 0 {
		// Zero would silently mean the default in Config.
		l.Invalid(EnvNotReadyAfter, "a positive duration", c.NotReadyAfter.String(), nil)
	}
	if c.MemberTTL < MinMemberTTL {
		l.Invalid(EnvMemberTTL, fmt.Sprintf("a duration of at least %s", MinMemberTTL), c.MemberTTL.String(), nil)
	}
	return c
}

// orDefault returns v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
