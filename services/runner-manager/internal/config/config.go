// Package config loads runner-manager's configuration from the
// environment: the runtime's shared variables (service.LoadConfig), the
// consumer group's (group.LoadConfig), the API client's, and its own.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/session"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
)

// Environment variables read by Load besides the shared ones (service.Env*,
// group.Env*, apiclient's, bus's NATS variables).
const (
	EnvBucketReplica = "BUCKET_REPLICAS"

	EnvWorkspaceRoot  = "LOCAL_WORKSPACE_ROOT"
	EnvRunnerCommand  = "LOCAL_RUNNER_COMMAND"
	EnvPortRange      = "LOCAL_PORT_RANGE"
	EnvMaxSessions    = "LOCAL_MAX_SESSIONS"
	EnvMaxPerProject  = "LOCAL_MAX_SESSIONS_PER_PROJECT"
	EnvStopGrace      = "LOCAL_STOP_GRACE"
	EnvHealthInterval = "LOCAL_HEALTH_INTERVAL"
	EnvHealthAttempts = "LOCAL_HEALTH_ATTEMPTS"
	EnvBossURL        = "BOSS_URL"
	EnvBossSpace      = "BOSS_SPACE"
	EnvRunnerEnvAllow = "RUNNER_ENV_ALLOW"
	// EnvBackendURL is the base URL runners send their first prompt to
	// (BACKEND_API_URL: the platform's runner POSTs INITIAL_PROMPT to
	// <url>/projects/<project>/agentic-sessions/<id>/agui/run).
	EnvBackendURL = "RUNNER_BACKEND_API_URL"
	// EnvBotToken is the bearer token runners send with that POST
	// (BOT_TOKEN); usually given as a file, EnvBotToken+"_FILE".
	EnvBotToken = "RUNNER_BOT_TOKEN"

	EnvAdvertiseHost  = "RUNNER_ADVERTISE_HOST"
	EnvProjects       = "RUNNER_PROJECTS"
	EnvSessionLabel   = "RUNNER_SESSION_LABEL"
	EnvLostPolicy     = "RUNNER_LOST_POLICY"
	EnvSweepInterval  = "RUNNER_SWEEP_INTERVAL"
	EnvResyncInterval = "RUNNER_RESYNC_INTERVAL"
	EnvCheckInterval  = "RUNNER_CHECK_INTERVAL"
	EnvMarkerTTL      = "RUNNERS_MARKER_TTL"
	// EnvPortReuseDelay is how long a released runner port is not handed
	// to another runner (0: at once).
	EnvPortReuseDelay = "PORT_REUSE_DELAY"
)

// Defaults (mirrored in the Helm values).
const (
	DefaultGroupName = "runner-manager"
	// DefaultAckWait is the other consumers' (libs/group's) 10s. It was
	// 30s: every membership change of the group re-creates each member's
	// consumer, and the messages in transit to the old subscription come
	// back only after an AckWait (libs/group/order.go), so a replica's
	// starts and stops waited up to 30s after a peer joined or left (seen
	// in the chaos suite: 31s). Long handlers (a start's health wait) are
	// kept alive with InProgress, so they need no longer AckWait.
	DefaultAckWait        = group.DefaultAckWait
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
	// DefaultCheckInterval bounds how long a local runner outlives a
	// delete that no event announced: one API read per local runner each
	// interval.
	DefaultCheckInterval = 10 * time.Second
	// DefaultMarkerTTL: how long the marker of a released claim stays in
	// KV ambient-runners. Nothing reads markers (a watcher that reconnects
	// reads the live keys afresh); one that reconnects within the TTL still
	// sees the release as a delete.
	DefaultMarkerTTL = time.Minute
	// DefaultPortReuseDelay outlasts agui-proxy's default ROUTES_STALE_AFTER
	// (10s) plus its heartbeat (about 2s) twice over: a proxy cut off from
	// NATS keeps routing a released session's clients to its host:port
	// until then, and a new runner there would get them. Longer would
	// hold more of the range back (a range of 100 ports and a runner
	// ending every second would have 30 waiting).
	DefaultPortReuseDelay = 30 * time.Second
)

// Config is runner-manager's whole configuration. Pass it by value.
type Config struct {
	// Config holds NATS, LOG_LEVEL, METRICS_ADDR and the OTLP endpoint.
	service.Config
	API apiclient.EnvConfig
	// Group is this replica as a consumer-group member of session events
	// (EVENTS_STREAM, SUBJECT_PREFIX, CONSUMER_GROUP, MEMBER_ID, GROUP_*,
	// MEMBER_TTL). Group.Member is also the owner written on its claims,
	// and Group.MemberTTL the lifetime of its liveness heartbeat. Two live
	// replicas must never share a member id.
	Group          group.Config
	BucketReplicas int

	WorkspaceRoot string
	RunnerCommand []string
	PortLow       int
	PortHigh      int
	MaxSessions   int
	// MaxPerProject caps one project's runners on this replica (0: no cap
	// but MaxSessions).
	MaxPerProject  int
	StopGrace      time.Duration
	HealthInterval time.Duration
	HealthAttempts int
	BossURL        string
	BossSpace      string
	// BackendURL is passed to runners as BACKEND_API_URL ("" : not passed).
	BackendURL string
	// BotToken is passed to runners as BOT_TOKEN ("": not passed). Read
	// once at start (RUNNER_BOT_TOKEN or RUNNER_BOT_TOKEN_FILE): a runner
	// takes it from its environment at spawn, so a rotated file could
	// reach only later runners anyway. Trimmed, as the platform's runner
	// trims what it reads.
	BotToken envconfig.Redacted
	// HostEnv is the process environment; runners inherit its allow-listed
	// part.
	HostEnv []string
	// EnvAllow extends the original allow-list of inherited host
	// variables: names, or prefixes ending in "*". In Kubernetes the demo
	// runner needs DEMO_HOST=0.0.0.0 to be reachable on the pod IP.
	EnvAllow []string

	AdvertiseHost string
	// Selector picks the sessions run here (RUNNER_PROJECTS and
	// RUNNER_SESSION_LABEL).
	Selector       session.Selector
	LostPolicy     string
	SweepInterval  time.Duration
	ResyncInterval time.Duration
	CheckInterval  time.Duration
	// MarkerTTL is how long a released claim's marker stays in the
	// registry bucket (at least 1s, the server's resolution).
	MarkerTTL time.Duration
	// PortReuseDelay is how long a released runner port waits before it
	// is handed to another runner (0: at once). It must exceed the time
	// agui-proxy routes by a table it cannot confirm (its
	// ROUTES_STALE_AFTER plus a heartbeat); nothing here can check that.
	PortReuseDelay time.Duration
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
		Config: service.LoadConfig(l, service.Config{}),
		API:    apiclient.LoadEnv(l),
		Group: group.LoadConfig(l, group.Config{Group: DefaultGroupName, AckWait: DefaultAckWait,
			Resources: []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS}}),
		BucketReplicas: l.Int(EnvBucketReplica, 1, 1, 5),

		WorkspaceRoot:  l.String(EnvWorkspaceRoot, DefaultWorkspaceRoot),
		RunnerCommand:  l.Command(EnvRunnerCommand, DefaultRunnerCommand),
		PortLow:        ports.Low,
		PortHigh:       ports.High,
		MaxSessions:    l.Int(EnvMaxSessions, DefaultMaxSessions, 1, 10000),
		MaxPerProject:  l.Int(EnvMaxPerProject, 0, 0, 10000),
		StopGrace:      l.Duration(EnvStopGrace, DefaultStopGrace),
		HealthInterval: l.Duration(EnvHealthInterval, DefaultHealthInterval),
		HealthAttempts: l.Int(EnvHealthAttempts, DefaultHealthAttempts, 1, 10000),
		BossURL:        urlString(l.URL(EnvBossURL, "", "http", "https")),
		BossSpace:      l.String(EnvBossSpace, DefaultBossSpace),
		BackendURL:     urlString(l.URL(EnvBackendURL, "", "http", "https")),
		BotToken:       envconfig.Redacted(strings.TrimSpace(l.Secret(EnvBotToken).Reveal())),
		HostEnv:        hostEnv,
		EnvAllow:       l.List(EnvRunnerEnvAllow, nil),

		AdvertiseHost:  l.String(EnvAdvertiseHost, DefaultAdvertiseHost),
		LostPolicy:     l.Enum(EnvLostPolicy, DefaultLostPolicy, "restart", "fail"),
		SweepInterval:  l.Duration(EnvSweepInterval, DefaultSweepInterval),
		ResyncInterval: l.Duration(EnvResyncInterval, DefaultResyncInterval),
		CheckInterval:  l.Duration(EnvCheckInterval, DefaultCheckInterval),
		MarkerTTL:      l.Duration(EnvMarkerTTL, DefaultMarkerTTL),
		PortReuseDelay: l.Duration(EnvPortReuseDelay, DefaultPortReuseDelay),
	}
	projects, label := l.List(EnvProjects, []string{DefaultProjects}), l.String(EnvSessionLabel, "")
	sel, err := session.NewSelector(projects, label)
	if err != nil {
		l.Invalid(EnvSessionLabel, "key=value", label, nil)
	}
	c.Selector = sel
	if root, err := expandHome(c.WorkspaceRoot, lookupOr(lookup, "HOME")); err != nil {
		l.Invalid(EnvWorkspaceRoot, "an absolute path or ~/path with HOME set", c.WorkspaceRoot, nil)
	} else {
		c.WorkspaceRoot = root
	}
	for name, d := range map[string]time.Duration{EnvStopGrace: c.StopGrace, EnvHealthInterval: c.HealthInterval, EnvSweepInterval: c.SweepInterval} {
		if d <= 0 {
			l.Invalid(name, "a positive duration", d.String(), nil)
		}
	}
	if c.MarkerTTL < time.Second {
		l.Invalid(EnvMarkerTTL, "a duration of at least 1s", c.MarkerTTL.String(), nil)
	}
	for name, d := range map[string]time.Duration{EnvResyncInterval: c.ResyncInterval, EnvCheckInterval: c.CheckInterval, EnvPortReuseDelay: c.PortReuseDelay} {
		if d < 0 {
			l.Invalid(name, "a duration >= 0 (0 disables)", d.String(), nil)
		}
	}
	for _, e := range c.EnvAllow {
		if !validEnvAllowEntry(e) {
			l.Invalid(EnvRunnerEnvAllow, `comma-separated variable names, or prefixes ending in "*" (a bare "*" is refused)`, lookupOr(lookup, EnvRunnerEnvAllow), nil)
			break
		}
	}
	if !validAdvertiseHost(c.AdvertiseHost) {
		l.Invalid(EnvAdvertiseHost, "a host name or IP the proxy can reach (no port, brackets or white space)", c.AdvertiseHost, nil)
	}
	if err := l.Err(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.NATS.Name = "runner-manager/" + c.Group.Member
	return c, nil
}

// validEnvAllowEntry reports whether e is a variable name, optionally with
// a trailing "*"; a bare "*" is refused (it would pass every secret of the
// host to every runner).
func validEnvAllowEntry(e string) bool {
	name := strings.TrimSuffix(e, "*")
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// validAdvertiseHost reports whether h is an IP address (the pod IP, v4 or
// v6) or a DNS host name. Anything else is written to the registry as it
// is and joined with a port by the proxy, which then can never dial it: a
// host with a port ("10.0.0.5:9100"), a bracketed IPv6 address, a
// reference Kubernetes left unexpanded ("$(POD_IP)"), a tab or line break.
func validAdvertiseHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	name := strings.TrimSuffix(h, ".") // a fully qualified name may end in "."
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			default:
				return false
			}
		}
	}
	return true
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

// urlString is u as the runners get it; "" for none (unset or invalid: an
// invalid value is already an error of the load).
func urlString(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}
