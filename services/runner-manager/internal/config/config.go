// Package config loads runner-manager's configuration from the environment.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// Environment variables read by Load.
const (
	EnvSubjectPrefix = "SUBJECT_PREFIX"
	EnvEventsStream  = "EVENTS_STREAM"
	EnvBucketReplica = "BUCKET_REPLICAS"

	EnvMemberID         = "MEMBER_ID"
	EnvGroupName        = "CONSUMER_GROUP"
	EnvGroupPartitions  = "GROUP_PARTITIONS"
	EnvMemberPartitions = "GROUP_MEMBER_PARTITIONS"
	EnvGroupMaxDeliver  = "GROUP_MAX_DELIVER"
	EnvGroupAckWait     = "GROUP_ACK_WAIT"
	EnvMemberTTL        = "MEMBER_TTL"

	EnvWorkspaceRoot  = "LOCAL_WORKSPACE_ROOT"
	EnvRunnerCommand  = "LOCAL_RUNNER_COMMAND"
	EnvPortRange      = "LOCAL_PORT_RANGE"
	EnvMaxSessions    = "LOCAL_MAX_SESSIONS"
	EnvStopGrace      = "LOCAL_STOP_GRACE"
	EnvHealthInterval = "LOCAL_HEALTH_INTERVAL"
	EnvHealthAttempts = "LOCAL_HEALTH_ATTEMPTS"
	EnvBossURL        = "BOSS_URL"
	EnvBossSpace      = "BOSS_SPACE"
	EnvRunnerEnvAllow = "RUNNER_ENV_ALLOW"

	EnvAdvertiseHost  = "RUNNER_ADVERTISE_HOST"
	EnvProjects       = "RUNNER_PROJECTS"
	EnvSessionLabel   = "RUNNER_SESSION_LABEL"
	EnvLostPolicy     = "RUNNER_LOST_POLICY"
	EnvSweepInterval  = "RUNNER_SWEEP_INTERVAL"
	EnvResyncInterval = "RUNNER_RESYNC_INTERVAL"

	EnvLogLevel     = "LOG_LEVEL"
	EnvMetricsAddr  = "METRICS_ADDR"
	EnvOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"
)

// Defaults (mirrored in the Helm values).
const (
	DefaultGroupName      = "runner-manager"
	DefaultPartitions     = 16
	DefaultMaxDeliver     = 5
	DefaultAckWait        = 30 * time.Second
	DefaultMemberTTL      = 5 * time.Second
	DefaultWorkspaceRoot  = "~/.ambient/workspaces"
	DefaultRunnerCommand  = "python local_entry.py"
	DefaultPortRange      = "9100-9199"
	DefaultMaxSessions    = 10
	DefaultStopGrace      = 10 * time.Second
	DefaultHealthInterval = 500 * time.Millisecond
	DefaultHealthAttempts = 30
	DefaultBossSpace      = "default"
	DefaultAdvertiseHost  = "127.0.0.1"
	DefaultProjects       = "*"
	DefaultLostPolicy     = "restart"
	DefaultSweepInterval  = 5 * time.Second
	DefaultResyncInterval = time.Minute
	DefaultLogLevel       = "info"
	DefaultMetricsAddr    = ":9090"
)

// Config is runner-manager's whole configuration. Pass it by value.
type Config struct {
	API apiclient.EnvConfig

	NATS           bus.ConnectConfig
	SubjectPrefix  string
	Stream         string
	BucketReplicas int

	// MemberID is this replica's stable identity: its consumer group member
	// name and the owner written on its claims. Default: the host name (the
	// pod name). Two live replicas must never share it.
	MemberID         string
	GroupName        string
	Partitions       int
	MemberPartitions []int // canary slice; empty = share the rest
	MaxDeliver       int
	AckWait          time.Duration
	MemberTTL        time.Duration

	WorkspaceRoot  string
	RunnerCommand  []string
	PortLow        int
	PortHigh       int
	MaxSessions    int
	StopGrace      time.Duration
	HealthInterval time.Duration
	HealthAttempts int
	BossURL        string
	BossSpace      string
	// HostEnv is the process environment; runners inherit its allow-listed
	// part.
	HostEnv []string
	// EnvAllow extends the original allow-list of inherited host
	// variables: names, or prefixes ending in "*". In Kubernetes the demo
	// runner needs DEMO_HOST=0.0.0.0 to be reachable on the pod IP.
	EnvAllow []string

	AdvertiseHost  string
	Projects       []string
	SessionLabel   string
	LostPolicy     string
	SweepInterval  time.Duration
	ResyncInterval time.Duration

	LogLevel     string
	MetricsAddr  string
	OTLPEndpoint string
}

// FromEnv reads the process environment.
func FromEnv() (Config, error) { return Load(nil, os.Environ()) }

// Load reads the configuration through lookup (nil: the process
// environment); hostEnv is what runners may inherit from. Every problem is
// returned at once, each naming its variable.
func Load(lookup envconfig.LookupFunc, hostEnv []string) (Config, error) {
	l := envconfig.New(lookup)
	ports := l.PortRange(EnvPortRange, envconfig.PortRange{Low: 9100, High: 9199})
	c := Config{
		API:            apiclient.LoadEnv(l),
		NATS:           bus.LoadConnectConfig(l, bus.DefaultURL),
		SubjectPrefix:  l.String(EnvSubjectPrefix, events.SubjectPrefix),
		Stream:         l.String(EnvEventsStream, events.StreamName),
		BucketReplicas: l.Int(EnvBucketReplica, 1, 1, 5),

		MemberID:   group.LoadMemberID(l, EnvMemberID),
		GroupName:  l.String(EnvGroupName, DefaultGroupName),
		Partitions: l.Int(EnvGroupPartitions, DefaultPartitions, 1, 1024),
		MaxDeliver: l.Int(EnvGroupMaxDeliver, DefaultMaxDeliver, 1, 1000),
		AckWait:    l.Duration(EnvGroupAckWait, DefaultAckWait),
		MemberTTL:  l.Duration(EnvMemberTTL, DefaultMemberTTL),

		WorkspaceRoot:  l.String(EnvWorkspaceRoot, DefaultWorkspaceRoot),
		RunnerCommand:  l.Command(EnvRunnerCommand, DefaultRunnerCommand),
		PortLow:        ports.Low,
		PortHigh:       ports.High,
		MaxSessions:    l.Int(EnvMaxSessions, DefaultMaxSessions, 1, 10000),
		StopGrace:      l.Duration(EnvStopGrace, DefaultStopGrace),
		HealthInterval: l.Duration(EnvHealthInterval, DefaultHealthInterval),
		HealthAttempts: l.Int(EnvHealthAttempts, DefaultHealthAttempts, 1, 10000),
		BossURL:        l.String(EnvBossURL, ""),
		BossSpace:      l.String(EnvBossSpace, DefaultBossSpace),
		HostEnv:        hostEnv,
		EnvAllow:       l.List(EnvRunnerEnvAllow, nil),

		AdvertiseHost:  l.String(EnvAdvertiseHost, DefaultAdvertiseHost),
		Projects:       l.List(EnvProjects, []string{DefaultProjects}),
		SessionLabel:   l.String(EnvSessionLabel, ""),
		LostPolicy:     l.Enum(EnvLostPolicy, DefaultLostPolicy, "restart", "fail"),
		SweepInterval:  l.Duration(EnvSweepInterval, DefaultSweepInterval),
		ResyncInterval: l.Duration(EnvResyncInterval, DefaultResyncInterval),

		LogLevel:     l.Enum(EnvLogLevel, DefaultLogLevel, "debug", "info", "warn", "error"),
		MetricsAddr:  l.HostPort(EnvMetricsAddr, DefaultMetricsAddr),
		OTLPEndpoint: l.String(EnvOTLPEndpoint, ""),
	}
	c.MemberPartitions = l.IntSet(EnvMemberPartitions, c.Partitions)
	errs := []error{l.Err()}
	bad := func(name, want, got string) {
		errs = append(errs, &envconfig.VarError{Name: name, Want: want, Got: got})
	}
	if root, err := expandHome(c.WorkspaceRoot, lookupOr(lookup, "HOME")); err != nil {
		bad(EnvWorkspaceRoot, "an absolute path or ~/path with HOME set", c.WorkspaceRoot)
	} else {
		c.WorkspaceRoot = root
	}
	if !group.ValidName(c.GroupName) {
		bad(EnvGroupName, `letters, digits, "-" and "_"`, c.GroupName)
	}
	if c.AckWait < time.Second {
		bad(EnvGroupAckWait, "a duration of at least 1s", c.AckWait.String())
	}
	if c.MemberTTL < 300*time.Millisecond {
		bad(EnvMemberTTL, "a duration of at least 300ms", c.MemberTTL.String())
	}
	for name, d := range map[string]time.Duration{EnvStopGrace: c.StopGrace, EnvHealthInterval: c.HealthInterval, EnvSweepInterval: c.SweepInterval} {
		if d <= 0 {
			bad(name, "a positive duration", d.String())
		}
	}
	if c.ResyncInterval < 0 {
		bad(EnvResyncInterval, "a duration >= 0 (0 disables)", c.ResyncInterval.String())
	}
	for _, e := range c.EnvAllow {
		if !runner.ValidEnvAllowEntry(e) {
			bad(EnvRunnerEnvAllow, `comma-separated variable names, or prefixes ending in "*" (a bare "*" is refused)`, lookupOr(lookup, EnvRunnerEnvAllow))
			break
		}
	}
	if c.AdvertiseHost == "" || strings.ContainsAny(c.AdvertiseHost, " /") {
		bad(EnvAdvertiseHost, "a host name or IP the proxy can reach", c.AdvertiseHost)
	}
	if k, _, ok := strings.Cut(c.SessionLabel, "="); c.SessionLabel != "" && (!ok || k == "") {
		bad(EnvSessionLabel, "key=value", c.SessionLabel)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "runner-manager/" + c.MemberID
	return c, nil
}

func lookupOr(lookup envconfig.LookupFunc, name string) string {
	if lookup == nil {
		return os.Getenv(name)
	}
	v, _ := lookup(name)
	return v
}

func expandHome(p, home string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home == "" {
			return "", errors.New("HOME unset")
		}
		p = filepath.Join(home, strings.TrimPrefix(p, "~"))
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("relative path %q", p)
	}
	return filepath.Clean(p), nil
}
