package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
	"golang.org/x/sync/errgroup"
)

// ErrPortInUse is returned by Run when a port the stack needs is taken.
var ErrPortInUse = errors.New("port in use")

// Run starts the stack, waits until every service is ready, prints what runs
// and what to try next, and keeps everything running until ctx ends; then it
// stops the services in reverse order (SIGTERM, SIGKILL after StopGrace) and
// the NATS server. Once hurry is done (a second Ctrl-C), services still
// stopping are killed at once instead of being given the rest of their grace.
func Run(ctx, hurry context.Context, cfg Config, out io.Writer) error {
	if err := checkBinaries(cfg); err != nil {
		return err
	}
	if err := checkPorts(cfg); err != nil {
		return err
	}
	if cfg.Temp {
		dir, err := os.MkdirTemp("", "ambient-devstack-")
		if err != nil {
			return fmt.Errorf("temp state dir: %w", err)
		}
		cfg.StateDir = dir
		defer os.RemoveAll(dir) //nolint:errcheck // best effort cleanup of a temp dir
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	cfg.StateDir = abs
	pidDir := filepath.Join(cfg.StateDir, "run")
	for _, d := range []string{pidDir, filepath.Join(cfg.StateDir, "nats"), filepath.Join(cfg.StateDir, "workspaces")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}

	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(cfg.StateDir, "nats"), Host: cfg.Host, Port: cfg.NATSPort, ServerName: "devstack"})
	if err != nil {
		return fmt.Errorf("start embedded NATS: %w", err)
	}
	defer ns.Shutdown()
	fmt.Fprintf(out, "devstack: NATS with JetStream on %s (data in %s)\n", cfg.NATSURL(), filepath.Join(cfg.StateDir, "nats"))

	svcs := cfg.services()
	logs := &logWriter{out: out, raw: cfg.RawLogs, width: 15}
	sups := make([]*supervised, len(svcs))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	for i, svc := range svcs {
		sups[i] = newSupervised(svc, cfg, logs, pidDir, out)
	}
	// stopAll stops services in reverse start order; it runs once, on the way
	// out, whatever the reason.
	stopAll := func() {
		cancel()
		for i := len(sups) - 1; i >= 0; i-- {
			// Stop returns once the child has exited, so services stop one
			// after the other. An error means the group could not be
			// signalled; the child dies with devstack anyway (Pdeathsig).
			_ = sups[i].proc.Stop(hurry, cfg.StopGrace) //nolint:errcheck // best effort on the way out
		}
	}
	startStage := func(stage int) {
		for i := range sups {
			if svcs[i].stage != stage {
				continue
			}
			g.Go(func() error { return sups[i].run(gctx) })
		}
	}

	readyErr := make(chan error, 1) // written once by the start-up sequence below
	go func() {                     // owned by Run: it ends when every stage is ready or ctx is done
		readyErr <- startInStages(gctx, cfg, svcs, sups, startStage)
	}()

	select {
	case err := <-readyErr:
		if err != nil {
			stopAll()
			_ = g.Wait() //nolint:errcheck // the start-up error is the one to report
			return err
		}
		printBanner(out, cfg, svcs, pidDir)
	case <-gctx.Done():
	}
	<-gctx.Done()
	fmt.Fprintln(out, "devstack: stopping services")
	stopAll()
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Fprintln(out, "devstack: stopped")
	return nil
}

func startInStages(ctx context.Context, cfg Config, svcs []service, sups []*supervised, startStage func(int)) error {
	last := 0
	for _, s := range svcs {
		last = max(last, s.stage)
	}
	deadline := time.Now().Add(cfg.ReadyTimeout)
	for stage := 0; stage <= last; stage++ {
		startStage(stage)
		for i, s := range svcs {
			if s.stage != stage {
				continue
			}
			if err := waitReady(ctx, sups[i], cfg.Token, deadline); err != nil {
				return fmt.Errorf("%s did not become ready: %w", s.name, err)
			}
		}
	}
	return nil
}

func waitReady(ctx context.Context, s *supervised, token string, deadline time.Time) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return proc.WaitReady(ctx, s.readyProbe(client, token), deadline)
}

func checkBinaries(cfg Config) error {
	var missing []string
	for _, s := range cfg.services() {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, s.binary)); err != nil {
			missing = append(missing, s.binary)
		}
	}
	if cfg.RunnerCommand == "" {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, "demo-runner")); err != nil {
			missing = append(missing, "demo-runner")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("binaries missing in %s: %s (run `make build`, or `make run` which builds first)", cfg.BinDir, strings.Join(missing, ", "))
	}
	if cfg.RunnerCommand != "" {
		return checkRunnerProgram(cfg.RunnerCommand)
	}
	return nil
}

// checkRunnerProgram fails at start when --runner-command's program cannot
// be found, instead of every session failing with ProcessSpawnFailed. It
// resolves the line as runner-manager will: runner-manager inherits
// devstack's working directory and PATH.
func checkRunnerProgram(line string) error {
	argv, err := envconfig.ParseCommand(line)
	if err != nil {
		return fmt.Errorf("--runner-command %q: %w", line, err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	prog := envconfig.ResolveCommand(argv, wd)[0]
	if _, err := exec.LookPath(prog); err != nil {
		return fmt.Errorf("--runner-command %q: %w", line, err)
	}
	return nil
}

// boundPort is a port the stack binds, what binds it, and the flag that
// sets it.
type boundPort struct {
	n    int
	what string
	flag string
}

// boundPorts lists the ports the stack binds: the services' health/metrics
// ports first, so that a fixed port colliding with one of them is the one
// reported (checkPortsApart blames the later of two).
func (c Config) boundPorts() []boundPort {
	var ports []boundPort
	for _, s := range c.services() {
		if strings.HasPrefix(s.readyURL, "http://") && strings.HasSuffix(s.readyURL, "/readyz") {
			_, p, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(s.readyURL, "http://"), "/readyz"))
			n, _ := strconv.Atoi(p) //nolint:errcheck // built from an int above
			ports = append(ports, boundPort{n, s.name + " health/metrics", "--metrics-port-base"})
		}
	}
	return append(ports,
		boundPort{c.NATSPort, "NATS", "--nats-port"},
		boundPort{c.APIGRPCPort, "in-memory API gRPC", "--api-grpc-port"},
		boundPort{c.APIRESTPort, "in-memory API REST", "--api-rest-port"},
		boundPort{c.ProxyPort, "agui-proxy", "--proxy-port"},
	)
}

// checkPorts fails fast, naming the port and the flag, instead of letting a
// service die later with a bind error.
func checkPorts(cfg Config) error {
	var errs []error
	for _, p := range cfg.boundPorts() {
		l, err := net.Listen("tcp", cfg.addr(p.n))
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s port %d on %s is taken (stop what uses it, or pass %s): %w", ErrPortInUse, p.what, p.n, cfg.Host, p.flag, err))
			continue
		}
		_ = l.Close() //nolint:errcheck // probe listener
	}
	return errors.Join(errs...)
}

func printBanner(out io.Writer, cfg Config, svcs []service, pidDir string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n=== ambient control plane is running ===\n")
	fmt.Fprintf(&b, "  %-16s %s\n", "NATS", cfg.NATSURL())
	fmt.Fprintf(&b, "  %-16s grpc %s, rest %s (token %q)\n", "ambient API", cfg.APIGRPCAddr(), cfg.APIRESTURL(), cfg.Token)
	for _, s := range svcs {
		if s.name == "api" {
			continue
		}
		fmt.Fprintf(&b, "  %-16s health/metrics %s\n", s.name, strings.TrimSuffix(s.readyURL, "/readyz"))
	}
	fmt.Fprintf(&b, "  %-16s %s\n", "AG-UI proxy", cfg.ProxyURL())
	fmt.Fprintf(&b, "  %-16s %s\n", "runner command", cfg.RunnerCommandLine())
	fmt.Fprintf(&b, "  %-16s %s\n", "pid files", pidDir)
	fmt.Fprintf(&b, "\nTry, in another terminal:\n")
	fmt.Fprintf(&b, "  bin/ambientctl projects create demo\n")
	fmt.Fprintf(&b, "  bin/ambientctl sessions create hello --project demo\n")
	fmt.Fprintf(&b, "  bin/ambientctl sessions list            # wait for phase Running\n")
	fmt.Fprintf(&b, "  bin/ambientctl chat <SESSION_ID> \"hello from the control plane\"\n")
	fmt.Fprintf(&b, "  bin/ambientctl sessions stop <SESSION_ID>\n")
	fmt.Fprintf(&b, "  bin/ambientctl events tail --all\n")
	fmt.Fprintf(&b, "  bin/ambientctl tally\n")
	fmt.Fprintf(&b, "  curl -H 'Authorization: Bearer %s' %s/api/ambient/v1/sessions\n", cfg.Token, cfg.APIRESTURL())
	fmt.Fprintf(&b, "Ctrl-C stops everything.\n\n")
	fmt.Fprint(out, b.String())
}
