// Package config loads the informer's configuration from the environment.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
)

// Environment variables read by FromEnv.
const (
	EnvSubjectPrefix    = "SUBJECT_PREFIX"
	EnvEventsStream     = "EVENTS_STREAM"
	EnvObjectsBucket    = "OBJECTS_BUCKET"
	EnvLeaseKey         = "LEASE_KEY"
	EnvLeaseTTL         = "LEASE_TTL"
	EnvResyncPeriod     = "RESYNC_PERIOD"
	EnvStreamReplicas   = "STREAM_REPLICAS"
	EnvStreamMaxAge     = "STREAM_MAX_AGE"
	EnvWorkers          = "PUBLISH_WORKERS"
	EnvBackoffInitial   = "WATCH_BACKOFF_INITIAL"
	EnvBackoffMax       = "WATCH_BACKOFF_MAX"
	EnvInstanceID       = "INSTANCE_ID"
	EnvMarkerTTL        = "OBJECTS_MARKER_TTL"
	EnvAuditInterval    = "KV_AUDIT_INTERVAL"
	EnvUnsyncedStepDown = "LEADER_UNSYNCED_TIMEOUT"
)

// Defaults (mirrored in the Helm values and docs/configuration.md).
const (
	DefaultLeaseKey       = "informer"
	DefaultLeaseTTL       = bus.DefaultLeaseTTL
	DefaultResyncPeriod   = 10 * time.Minute
	DefaultStreamReplicas = 1
	DefaultStreamMaxAge   = bus.DefaultEventsMaxAge
	DefaultWorkers        = 32
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 30 * time.Second
	// DefaultMarkerTTL: how long the delete marker of a deleted object stays
	// in the objects bucket. Nothing reads markers (the informer loads live
	// keys only, kube-reconciler's Get sees "not found" either way); a KV
	// watcher that reconnects within the TTL still sees the delete.
	DefaultMarkerTTL = bus.DefaultObjectsMarkerTTL
	// DefaultAuditInterval: how often the leader compares the objects
	// bucket with what it published (controller.Resource.auditKV): a
	// deleted object's entry brought back by a NATS server's store rebuild
	// is gone again within this.
	DefaultAuditInterval = time.Minute
	// DefaultUnsyncedStepDown: how long a leader's watch may stay unsynced
	// before it steps down. Four reconnects at the default backoff cap
	// (30 s), each cut short once the API answers again: an API that is
	// down for every replica costs a step-down and a relist after it, an
	// API unreachable from the leader alone a standby's take-over.
	DefaultUnsyncedStepDown = 2 * time.Minute
)

// Config is the informer's whole configuration. Pass it by value.
type Config struct {
	// Config holds NATS, LOG_LEVEL, METRICS_ADDR and the OTLP endpoint.
	service.Config

	API apiclient.EnvConfig

	// SubjectPrefix, Stream, ObjectsBucket and LeaseKey name where this
	// informer publishes. A shadow (canary) informer sets SUBJECT_PREFIX and
	// EVENTS_STREAM; its bucket and lease key then default to names of its
	// own, so it never touches the live stream, cache or lease.
	SubjectPrefix string
	Stream        string
	ObjectsBucket string
	LeaseKey      string

	LeaseTTL       time.Duration
	ResyncPeriod   time.Duration // 0 disables periodic resync
	StreamReplicas int
	StreamMaxAge   time.Duration
	Workers        int // publish workers per resource
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// MarkerTTL is how long a deleted object's marker stays in the objects
	// bucket before the server removes it (>= 1s).
	MarkerTTL time.Duration
	// AuditInterval is how often the objects bucket is compared with the
	// published state (0 disables it).
	AuditInterval time.Duration
	// UnsyncedStepDown is how long every one of the leader's watches may
	// stay unsynced before it releases the lease and holds back for a TTL
	// (0 disables it; see controller.LeadAll).
	UnsyncedStepDown time.Duration

	InstanceID string
}

// Shadow reports whether this informer publishes somewhere other than the
// live stream.
func (c Config) Shadow() bool { return c.Stream != events.StreamName }

// FromEnv reads the process environment (see Load).
func FromEnv() (Config, error) { return Load(nil) }

// MinInterval is the shortest RESYNC_PERIOD and KV_AUDIT_INTERVAL.
const MinInterval = 100 * time.Millisecond

// MinStreamMaxAge is the shortest max age a NATS server accepts for a
// stream.
const MinStreamMaxAge = 100 * time.Millisecond

// Load reads the configuration through lookup (nil: the process
// environment) and returns every problem at once; each names its variable.
func Load(lookup envconfig.LookupFunc) (Config, error) {
	l := envconfig.New(lookup)
	c := Config{
		Config:           service.LoadConfig(l, service.Config{}),
		API:              apiclient.LoadEnv(l),
		SubjectPrefix:    l.String(EnvSubjectPrefix, events.SubjectPrefix),
		Stream:           l.String(EnvEventsStream, events.StreamName),
		LeaseTTL:         l.Duration(EnvLeaseTTL, DefaultLeaseTTL),
		ResyncPeriod:     l.Duration(EnvResyncPeriod, DefaultResyncPeriod),
		StreamReplicas:   l.Int(EnvStreamReplicas, DefaultStreamReplicas, 1, 5),
		StreamMaxAge:     l.Duration(EnvStreamMaxAge, DefaultStreamMaxAge),
		Workers:          l.Int(EnvWorkers, DefaultWorkers, 1, 1024),
		BackoffInitial:   l.Duration(EnvBackoffInitial, DefaultBackoffInitial),
		BackoffMax:       l.Duration(EnvBackoffMax, DefaultBackoffMax),
		MarkerTTL:        l.Duration(EnvMarkerTTL, DefaultMarkerTTL),
		AuditInterval:    l.Duration(EnvAuditInterval, DefaultAuditInterval),
		UnsyncedStepDown: l.Duration(EnvUnsyncedStepDown, DefaultUnsyncedStepDown),
		InstanceID:       l.String(EnvInstanceID, ""),
	}
	defLease := DefaultLeaseKey
	if c.Shadow() {
		defLease += bus.ShadowSuffix(c.Stream)
	}
	c.ObjectsBucket = l.String(EnvObjectsBucket, bus.ObjectsBucketFor(c.Stream))
	c.LeaseKey = l.String(EnvLeaseKey, defLease)

	errs := []error{l.Err()}
	bad := func(name, want, got string) {
		errs = append(errs, &envconfig.VarError{Name: name, Want: want, Got: got})
	}
	if !events.ValidPrefix(c.SubjectPrefix) {
		bad(EnvSubjectPrefix, events.PrefixForm, c.SubjectPrefix)
	}
	if !group.ValidName(c.Stream) {
		bad(EnvEventsStream, `a stream name of letters, digits, "-" and "_"`, c.Stream)
	} else if why := group.ReservedStream(c.Stream); why != "" {
		// The informer creates its stream with its own subjects and limits:
		// over the dead-letter stream it would take the dead letters' place.
		bad(EnvEventsStream, "an events stream's name, not "+why, c.Stream)
	}
	if e := group.ObjectsBucketError(EnvObjectsBucket, c.ObjectsBucket); e != nil {
		errs = append(errs, e)
	}
	if !group.ValidName(c.LeaseKey) {
		bad(EnvLeaseKey, `a key of letters, digits, "-" and "_"`, c.LeaseKey)
	}
	// The live stream captures exactly the live prefix: mixing one with the
	// other would either change the live stream's subjects or publish a
	// shadow informer's events into it.
	if (c.Stream == events.StreamName) != (c.SubjectPrefix == events.SubjectPrefix) {
		bad(EnvSubjectPrefix, fmt.Sprintf("%q exactly when %s is %q (shadow mode sets both)", events.SubjectPrefix, EnvEventsStream, events.StreamName), c.SubjectPrefix)
	}
	if c.Shadow() && (c.ObjectsBucket == bus.BucketObjects || c.LeaseKey == DefaultLeaseKey) {
		bad(EnvObjectsBucket+"/"+EnvLeaseKey, "names other than the live informer's in shadow mode", c.ObjectsBucket+"/"+c.LeaseKey)
	}
	if c.Shadow() && c.SubjectPrefix != events.SubjectPrefix {
		if why := group.PrefixOverlap(c.SubjectPrefix); why != "" {
			bad(EnvSubjectPrefix, "a shadow stream's own prefix, not one that "+why, c.SubjectPrefix)
		}
	}
	if c.LeaseTTL < time.Second {
		bad(EnvLeaseTTL, "a duration of at least 1s", c.LeaseTTL.String())
	}
	if c.BackoffInitial <= 0 {
		bad(EnvBackoffInitial, "a positive duration", c.BackoffInitial.String())
	} else if c.BackoffMax < c.BackoffInitial {
		bad(EnvBackoffMax, fmt.Sprintf("a duration >= %s (%s)", EnvBackoffInitial, c.BackoffInitial), c.BackoffMax.String())
	}
	if c.MarkerTTL < time.Second {
		// The server's smallest per-message TTL.
		bad(EnvMarkerTTL, "a duration of at least 1s", c.MarkerTTL.String())
	}
	// A relist or an audit every few nanoseconds would read the whole API
	// or bucket without pause: what is not off must be a real interval.
	if c.AuditInterval != 0 && c.AuditInterval < MinInterval {
		bad(EnvAuditInterval, "0 (disables) or a duration of at least "+MinInterval.String(), c.AuditInterval.String())
	}
	// Shorter than a reconnect at the backoff's cap, every reconnect there
	// would be a step-down.
	if minStep := max(time.Second, c.BackoffMax); c.UnsyncedStepDown != 0 && c.UnsyncedStepDown < minStep {
		bad(EnvUnsyncedStepDown, fmt.Sprintf("0 (disables) or a duration of at least 1s and %s (%s)", EnvBackoffMax, c.BackoffMax), c.UnsyncedStepDown.String())
	}
	if c.ResyncPeriod != 0 && c.ResyncPeriod < MinInterval {
		bad(EnvResyncPeriod, "0 (disables) or a duration of at least "+MinInterval.String(), c.ResyncPeriod.String())
	}
	if envconfig.HasSpaceOrControl(c.InstanceID) {
		bad(EnvInstanceID, "an identity without white space (the lease holder's and the NATS connection's name)", c.InstanceID)
	}
	if c.StreamMaxAge < MinStreamMaxAge {
		// The server refuses a shorter max age when the stream is
		// created, which would be retried for ever.
		bad(EnvStreamMaxAge, "a duration of at least "+MinStreamMaxAge.String()+" (the NATS server's minimum)", c.StreamMaxAge.String())
	}
	if c.InstanceID == "" {
		id, err := defaultInstanceID()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: derive default: %w", EnvInstanceID, err))
		}
		c.InstanceID = id
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "informer/" + c.InstanceID
	return c, nil
}

// defaultInstanceID is the host name (the pod name in Kubernetes) plus a
// random suffix, so two processes on one host never share a lease identity.
func defaultInstanceID() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("hostname: %w", err)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random suffix: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}
