package service

import (
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/telemetry"
)

// Environment variables read by [LoadConfig] (besides the NATS ones of
// bus.LoadConnectConfig and the standard OTEL_* ones of
// telemetry.LoadEnv): the same names in every service.
const (
	EnvLogLevel    = "LOG_LEVEL"
	EnvMetricsAddr = "METRICS_ADDR"
)

// Defaults used when the matching field of LoadConfig's def is zero.
const (
	DefaultLogLevel    = telemetry.LevelInfo
	DefaultMetricsAddr = ":9090"
)

// Config is what the runtime needs from every service's configuration. A
// service's Config embeds it, so its fields read as cfg.NATS, cfg.LogLevel,
// and the service's Config satisfies [Configured] for [Main].
type Config struct {
	// NATS says how to reach NATS; NATS.Name (service/instance, shown in
	// server monitoring) is the service's to set.
	NATS bus.ConnectConfig
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// MetricsAddr is where /healthz, /readyz and /metrics listen.
	MetricsAddr string
	// Telemetry says which signals are exported; the OTel SDK builds the
	// exporters from the standard OTEL_* variables (telemetry.LoadEnv).
	Telemetry telemetry.Export
	// MemoryLimitRatio is the share of the container's memory limit that
	// Main gives the Go runtime as its soft memory limit (AUTOMEMLIMIT; 0:
	// none). See memoryLimit.
	MemoryLimitRatio float64
	// MemoryLimitRefresh is how often Main re-reads the container's memory
	// limit to follow a resize (AUTOMEMLIMIT_REFRESH; 0: read once).
	MemoryLimitRefresh time.Duration
}

// ServiceConfig returns c; through embedding it makes a service's Config a
// [Configured].
func (c Config) ServiceConfig() Config { return c }

// Configured is a service configuration that embeds [Config].
type Configured interface {
	ServiceConfig() Config
}

// LoadConfig reads the runtime's variables through l. def carries the
// service's defaults: NATS.URL (zero: bus.DefaultURL), NATS.Name (kept as
// is), LogLevel and MetricsAddr (zero: the package defaults). Telemetry
// export comes from the standard OTEL_* variables only; the memory limit's
// share from AUTOMEMLIMIT (default DefaultMemoryRatio), how often it is
// re-read from AUTOMEMLIMIT_REFRESH (default DefaultMemoryLimitRefresh).
// Problems are recorded in l, each naming its variable.
func LoadConfig(l *envconfig.Loader, def Config) Config {
	c := Config{
		NATS:        bus.LoadConnectConfig(l, orDefault(def.NATS.URL, bus.DefaultURL)),
		LogLevel:    l.Enum(EnvLogLevel, orDefault(def.LogLevel, DefaultLogLevel), telemetry.LevelDebug, telemetry.LevelInfo, telemetry.LevelWarn, telemetry.LevelError),
		MetricsAddr: l.HostPort(EnvMetricsAddr, orDefault(def.MetricsAddr, DefaultMetricsAddr)),
		Telemetry:   telemetry.LoadEnv(l),

		MemoryLimitRatio:   loadMemoryRatio(l),
		MemoryLimitRefresh: l.Duration(EnvAutoMemLimitRefresh, DefaultMemoryLimitRefresh),
	}
	// A refresh of a few nanoseconds is a busy loop re-reading cgroup
	// files; a limit changes when a pod is resized, not faster.
	if r := c.MemoryLimitRefresh; r > 0 && r < MinMemoryLimitRefresh {
		l.Invalid(EnvAutoMemLimitRefresh, "0 (read once) or a duration >= "+MinMemoryLimitRefresh.String(), r.String(), nil)
		c.MemoryLimitRefresh = DefaultMemoryLimitRefresh
	}
	c.NATS.Name = def.NATS.Name
	return c
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
