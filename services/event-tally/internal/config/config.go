// Package config loads event-tally's configuration from the environment.
package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
)

// Environment variables read by FromEnv (names shared with the other
// consumer services).
const (
	EnvSubjectPrefix    = "SUBJECT_PREFIX"
	EnvEventsStream     = "EVENTS_STREAM"
	EnvGroup            = "CONSUMER_GROUP"
	EnvMemberID         = "MEMBER_ID"
	EnvPartitions       = "GROUP_PARTITIONS"
	EnvMemberPartitions = "GROUP_MEMBER_PARTITIONS"
	EnvLogLevel         = "LOG_LEVEL"
	EnvMetricsAddr      = "METRICS_ADDR"
	EnvOTLPEndpoint     = "OTEL_EXPORTER_OTLP_ENDPOINT"
)

// Defaults (mirrored in the Helm values).
const (
	DefaultGroup       = "event-tally"
	DefaultPartitions  = group.DefaultPartitions
	DefaultLogLevel    = "info"
	DefaultMetricsAddr = ":9090"
)

// Config is event-tally's configuration. Pass it by value.
type Config struct {
	NATS             bus.ConnectConfig
	SubjectPrefix    string
	Stream           string
	Group            string
	MemberID         string
	Partitions       int
	MemberPartitions []int // canary slice; empty shares the partitions
	LogLevel         string
	MetricsAddr      string
	OTLPEndpoint     string
}

// FromEnv reads the process environment (see Load).
func FromEnv() (Config, error) { return Load(nil) }

// Load reads the configuration through lookup (nil: the process
// environment) and returns every problem at once, each naming its variable.
func Load(lookup envconfig.LookupFunc) (Config, error) {
	l := envconfig.New(lookup)
	c := Config{
		NATS:          bus.LoadConnectConfig(l, bus.DefaultURL),
		SubjectPrefix: l.String(EnvSubjectPrefix, events.SubjectPrefix),
		Stream:        l.String(EnvEventsStream, events.StreamName),
		Group:         l.String(EnvGroup, DefaultGroup),
		MemberID:      group.LoadMemberID(l, EnvMemberID),
		Partitions:    l.Int(EnvPartitions, DefaultPartitions, 1, 1024),
		LogLevel:      l.Enum(EnvLogLevel, DefaultLogLevel, "debug", "info", "warn", "error"),
		MetricsAddr:   l.HostPort(EnvMetricsAddr, DefaultMetricsAddr),
		OTLPEndpoint:  l.String(EnvOTLPEndpoint, ""),
	}
	c.MemberPartitions = l.IntSet(EnvMemberPartitions, c.Partitions)
	errs := []error{l.Err()}
	bad := func(name, want, got string) {
		errs = append(errs, &envconfig.VarError{Name: name, Want: want, Got: got})
	}
	if strings.ContainsAny(c.SubjectPrefix, "*> ") || c.SubjectPrefix == "" {
		bad(EnvSubjectPrefix, "a literal subject prefix", c.SubjectPrefix)
	}
	for name, v := range map[string]string{EnvEventsStream: c.Stream, EnvGroup: c.Group} {
		if !group.ValidName(v) {
			bad(name, `letters, digits, "-" and "_"`, v)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "event-tally/" + c.MemberID
	return c, nil
}
