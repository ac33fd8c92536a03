// Package config loads event-tally's configuration from the environment.
// Every variable it reads is a shared one: the runtime's (service) and the
// consumer group's (group).
package config

import (
	"fmt"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
)

// DefaultGroup is event-tally's consumer group (CONSUMER_GROUP); mirrored
// in the Helm values.
const DefaultGroup = "event-tally"

// Config is event-tally's configuration. Pass it by value.
type Config struct {
	// Config holds NATS, LOG_LEVEL, METRICS_ADDR and the OTLP endpoint.
	service.Config
	// Group is this member of the consumer group whose events it counts
	// (EVENTS_STREAM, SUBJECT_PREFIX, CONSUMER_GROUP, MEMBER_ID, GROUP_*).
	Group group.Config
}

// FromEnv reads the process environment (see Load).
func FromEnv() (Config, error) { return Load(nil) }

// Load reads the configuration through lookup (nil: the process
// environment) and returns every problem at once, each naming its variable.
func Load(lookup envconfig.LookupFunc) (Config, error) {
	l := envconfig.New(lookup)
	c := Config{
		Config: service.LoadConfig(l, service.Config{}),
		Group:  group.LoadConfig(l, group.Config{Group: DefaultGroup}),
	}
	if err := l.Err(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "event-tally/" + c.Group.Member
	return c, nil
}
