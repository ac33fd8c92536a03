// Package stack starts and supervises the local control plane: an embedded
// NATS server in this process and every service as a child process. The
// end-to-end tests run the devstack binary, so they exercise this exact code.
package stack

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/telemetry"
)

// Config is the whole stack's configuration. Ports default to the documented
// dev ports; tests pass free ones.
type Config struct {
	BinDir          string
	StateDir        string
	Temp            bool
	Kubeconfig      string
	KubeSessions    string
	Token           string
	Host            string
	NATSPort        int
	APIGRPCPort     int
	APIRESTPort     int
	ProxyPort       int
	MetricsPortBase int
	RunnerPorts     string
	RunnerCommand   string
	LogLevel        string
	RawLogs         bool
	ReadyTimeout    time.Duration
	StopGrace       time.Duration
}

// Defaults used by `make run`.
const (
	DefaultToken           = "dev-token"
	DefaultNATSPort        = 4222
	DefaultAPIGRPCPort     = 8001
	DefaultAPIRESTPort     = 8000
	DefaultProxyPort       = 9080
	DefaultMetricsPortBase = 9090
	DefaultRunnerPorts     = "9100-9199"
	DefaultStateDir        = ".dev"
	// DefaultKubeSessions keeps sessions on the local runners: the stack's
	// runner-manager runs every project, so any other selector would run
	// those sessions twice.
	DefaultKubeSessions = "none"
)

// ParseFlags reads the command line. It writes usage errors to w.
func ParseFlags(args []string, w io.Writer) (Config, error) {
	exe, err := os.Executable()
	binDir := "bin"
	if err == nil {
		binDir = filepath.Dir(exe)
	}
	var c Config
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(w)
	fs.StringVar(&c.BinDir, "bin-dir", binDir, "directory holding the service binaries (make build puts them in bin/)")
	fs.StringVar(&c.StateDir, "state-dir", DefaultStateDir, "where NATS data, runner workspaces and pid files live (git-ignored)")
	fs.BoolVar(&c.Temp, "temp", false, "use a temporary state directory removed on exit")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "also run kube-reconciler against this cluster")
	fs.StringVar(&c.KubeSessions, "kube-sessions", DefaultKubeSessions, "kube-reconciler's KUBE_SESSION_SELECTOR (with --kubeconfig): none leaves every session to the local runners; all, projects=a,b or label=k=v run those as AgenticSessions too")
	fs.StringVar(&c.Token, "token", DefaultToken, "API token shared by the in-memory API and the services")
	fs.StringVar(&c.Host, "host", "127.0.0.1", "address every port binds to")
	fs.IntVar(&c.NATSPort, "nats-port", DefaultNATSPort, "NATS client port")
	fs.IntVar(&c.APIGRPCPort, "api-grpc-port", DefaultAPIGRPCPort, "in-memory API gRPC port")
	fs.IntVar(&c.APIRESTPort, "api-rest-port", DefaultAPIRESTPort, "in-memory API REST port")
	fs.IntVar(&c.ProxyPort, "proxy-port", DefaultProxyPort, "agui-proxy port")
	fs.IntVar(&c.MetricsPortBase, "metrics-port-base", DefaultMetricsPortBase, "health/metrics ports are base+1 (informer) ... base+5")
	fs.StringVar(&c.RunnerPorts, "runner-ports", DefaultRunnerPorts, "port range for runner processes")
	fs.StringVar(&c.RunnerCommand, "runner-command", "", "runner command line, split with shell quoting like LOCAL_RUNNER_COMMAND, e.g. 'node runner.mjs --x \"a b\"' (default: the demo runner in --bin-dir)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "LOG_LEVEL for every service")
	fs.BoolVar(&c.RawLogs, "raw-logs", false, "print the services' JSON logs as they are")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 90*time.Second, "how long to wait for every service to be ready")
	fs.DurationVar(&c.StopGrace, "stop-grace", 20*time.Second, "how long each service gets to stop before SIGKILL")
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(w, "devstack: unexpected arguments %v\n", fs.Args())
		return Config{}, errors.New("unexpected arguments")
	}
	// Absolute, because the demo runner's path is handed to runner-manager
	// and runners run in their session workspace: a relative bin dir
	// would name nothing there (issue 16 point 5).
	abs, err := filepath.Abs(c.BinDir)
	if err != nil {
		fmt.Fprintf(w, "devstack: --bin-dir %q: %v\n", c.BinDir, err)
		return Config{}, fmt.Errorf("bin dir: %w", err)
	}
	c.BinDir = abs
	if err := c.check(fs); err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintf(w, "devstack: %s\n", line)
		}
		return Config{}, fmt.Errorf("flags: %w", err)
	}
	return c, nil
}

// maxPort is the largest TCP port.
const maxPort = 65535

// check refuses bad flag values before anything starts: a child given one
// would crash-loop until --ready-timeout and name its own variable, not the
// flag. Each value is checked by the parser the child reads it with
// (envconfig for ports, ranges, files and the runner command line, the
// services' LOG_LEVEL levels, kube-reconciler's KUBE_SESSION_SELECTOR),
// through a Loader whose variables are the flags, so that every problem is
// reported at once, each naming its flag. It sets LogLevel to the
// services' spelling.
func (c *Config) check(fs *flag.FlagSet) error {
	l := envconfig.New(flagLookup(fs))
	for _, name := range []string{"--token", "--state-dir", "--host", "--runner-ports"} {
		l.Required(name)
	}
	if c.Host != "" && !validHost(c.Host) {
		l.Invalid("--host", "a host name or IP address", c.Host, nil)
	}
	for _, name := range []string{"--nats-port", "--api-grpc-port", "--api-rest-port", "--proxy-port"} {
		l.Int(name, 0, 1, maxPort)
	}
	// The health/metrics ports are base+1 ... base+offsetKubeReconciler.
	l.Int("--metrics-port-base", 0, 0, maxPort-offsetKubeReconciler)
	runners := l.PortRange("--runner-ports", envconfig.PortRange{})
	c.LogLevel = l.Enum("--log-level", telemetry.LevelInfo, telemetry.LevelDebug, telemetry.LevelInfo, telemetry.LevelWarn, telemetry.LevelError)
	l.File("--kubeconfig", "")
	if _, err := session.ParseSelector(c.KubeSessions); err != nil {
		l.Invalid("--kube-sessions", "all, none, projects=a,b or label=key=value", c.KubeSessions, nil)
	}
	if c.RunnerCommand != "" {
		// The exact parser runner-manager reads LOCAL_RUNNER_COMMAND with, so
		// a line devstack accepts is one runner-manager accepts.
		if _, err := envconfig.ParseCommand(c.RunnerCommand); err != nil {
			l.Invalid("--runner-command", "a command line with shell quoting", c.RunnerCommand, err)
		}
	}
	if c.ReadyTimeout <= 0 {
		l.Invalid("--ready-timeout", "a positive duration", c.ReadyTimeout.String(), nil)
	}
	if c.StopGrace <= 0 {
		l.Invalid("--stop-grace", "a positive duration", c.StopGrace.String(), nil)
	}
	if l.Err() == nil { // the ports are all valid: now they must not collide
		checkPortsApart(l, c.boundPorts(), runners)
	}
	return l.Err()
}

// flagLookup reads flag values for an envconfig.Loader: the name "--x" is
// flag x's value as the command line set it (or its default).
func flagLookup(fs *flag.FlagSet) envconfig.LookupFunc {
	return func(name string) (string, bool) {
		f := fs.Lookup(strings.TrimPrefix(name, "--"))
		if f == nil {
			return "", false
		}
		return f.Value.String(), true
	}
}

// validHost reports whether host can stand in every URL and address the
// stack builds from it (NATS_URL, the readiness probes).
func validHost(host string) bool {
	u, err := url.Parse("http://" + net.JoinHostPort(host, "1"))
	return err == nil && u.Hostname() == host
}

// checkPortsApart records two flags that give the same port (the second
// child to bind it would crash-loop) and a runner range over a port of the
// stack (a runner would take it).
func checkPortsApart(l *envconfig.Loader, ports []boundPort, runners envconfig.PortRange) {
	owner := map[int]boundPort{}
	overlap := false
	for _, p := range ports {
		if first, ok := owner[p.n]; ok {
			l.Invalid(p.flag, "a port no other flag uses", strconv.Itoa(p.n), fmt.Errorf("%s (%s) uses it", first.what, first.flag))
			continue
		}
		owner[p.n] = p
		if runners.Contains(p.n) && !overlap {
			overlap = true // one example is enough
			l.Invalid("--runner-ports", "a range clear of the stack's other ports", runners.String(), fmt.Errorf("%s (%s) uses %d", p.what, p.flag, p.n))
		}
	}
}

// RunnerCommandLine is runner-manager's LOCAL_RUNNER_COMMAND: --runner-command
// as given, or the demo runner in BinDir quoted so a path with spaces stays
// one word.
func (c Config) RunnerCommandLine() string {
	if c.RunnerCommand != "" {
		return c.RunnerCommand
	}
	return envconfig.QuoteCommand(filepath.Join(c.BinDir, "demo-runner"))
}

func (c Config) addr(port int) string { return net.JoinHostPort(c.Host, strconv.Itoa(port)) }

// NATSURL is the client URL of the embedded NATS server.
func (c Config) NATSURL() string { return "nats://" + c.addr(c.NATSPort) }

// APIGRPCAddr is the in-memory API's gRPC address.
func (c Config) APIGRPCAddr() string { return c.addr(c.APIGRPCPort) }

// APIRESTURL is the in-memory API's REST base URL.
func (c Config) APIRESTURL() string { return "http://" + c.addr(c.APIRESTPort) }

// ProxyURL is the agui-proxy's base URL.
func (c Config) ProxyURL() string { return "http://" + c.addr(c.ProxyPort) }

// Service health/metrics ports, offsets from MetricsPortBase.
const (
	offsetInformer = iota + 1
	offsetRunnerManager
	offsetAGUIProxy
	offsetEventTally
	offsetKubeReconciler
)

// MetricsURL is the health/metrics base URL of the service at offset.
func (c Config) MetricsURL(offset int) string { return "http://" + c.addr(c.MetricsPortBase+offset) }

// TallyURL is event-tally's base URL.
func (c Config) TallyURL() string { return c.MetricsURL(offsetEventTally) }
