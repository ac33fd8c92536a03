package chaos

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
)

// Config is one chaos run.
type Config struct {
	// BinDir holds the service binaries, demo-runner and nats-server
	// (`make build` and `make nats-server`); KubeBinDir kube-apiserver and
	// etcd (`make kube-binaries`).
	BinDir     string
	KubeBinDir string
	// RepoRoot is where the chart's CRD and RBAC rules are read from.
	RepoRoot string
	// RunDir holds logs, NATS and etcd data, runner workspaces; empty: a new
	// temporary directory.
	RunDir string
	// Keep keeps RunDir after a passing run (a failing run always keeps it).
	Keep bool
	// Report is where the Markdown report goes ("" = none).
	Report string
	// Commit names the code under test in the report.
	Commit string

	Changes int
	Seed    int64
	// Short kills one replica of each service instead of every replica.
	Short bool

	// Fault lengths.
	RestartDelay time.Duration
	// TakeoverDown keeps the last kube-reconciler killed down past
	// MEMBER_TTL, so its peer takes its partitions over (0: none).
	TakeoverDown time.Duration
	KillSettle   time.Duration
	NodeLoss     time.Duration
	// NodeStoreLoss is how long the full run's NATS node that comes back
	// with an empty store (FaultNodeStoreLoss) stays down; 0: none. The
	// short run has none.
	NodeStoreLoss  time.Duration
	NATSOutage     time.Duration
	APIOutage      time.Duration // 0: DefaultAPIOutage, short ShortAPIOutage
	KubeOutage     time.Duration // 0: the kube-reconciler retry budget + KubeOutageMargin
	KubeMaxDeliver int
	// Freeze is how long a frozen member stays stopped (SIGSTOP to SIGCONT);
	// 0: DefaultFreeze, short ShortFreeze.
	Freeze time.Duration
	// NodeFreeze is how long the full run's node freeze (runner-manager-1
	// and every runner of it) lasts; 0: no node freeze. The short run has
	// none.
	NodeFreeze time.Duration
	// KubeResync is kube-reconciler's RESYNC_INTERVAL: what a dead-lettered
	// change waits for its repair, so it must be shorter than ConvergeBound.
	KubeResync time.Duration
	// InformerAudit is the informers' KV_AUDIT_INTERVAL: how long an
	// objects-bucket entry a NATS store rebuild brought back can mislead
	// readers (nats-server#8505), so it too must be well below ConvergeBound.
	InformerAudit time.Duration
	Warmup        time.Duration

	ConvergeTimeout time.Duration
	// ConvergeBound is the pass mark: converged within it after the last
	// fault.
	ConvergeBound  time.Duration
	SampleInterval time.Duration
	// LocalCap bounds the sessions that want a local runner at once.
	LocalCap int
	// Witnesses are local sessions created before the schedule and never
	// changed by it.
	Witnesses int
	// KubeWitnesses are kube sessions created before the schedule and
	// never changed by it: the operator's writes while a kube-reconciler is
	// down find AgenticSessions whatever the schedule made by then.
	KubeWitnesses int
	LogLevel      string
	Token         string
}

// Defaults. The TTLs the outages must outlast are the services' defaults
// (docs/configuration.md): MEMBER_TTL 5s, the informer's LEASE_TTL 10s.
const (
	DefaultChanges      = 2000
	ShortChanges        = 300
	ShortKubeMaxDeliver = 3
	// DefaultConvergeTimeout outlasts kube-reconciler's longest backoff
	// (2m) plus draining what queued during the apiserver outage, so what
	// is still wrong after it is lost, not late; the short run keeps CI
	// time.
	DefaultConvergeTimeout = 5 * time.Minute
	ShortConvergeTimeout   = 2 * time.Minute
	// DefaultAPIOutage is a restart of the real ambient-api-server that
	// takes a while (a rollout, a database failover): longer than the
	// informers' longest watch backoff, shorter than the consumers' retry
	// budget (156s), so what it loses is the system's doing. The short run
	// keeps CI time.
	DefaultAPIOutage = 75 * time.Second
	ShortAPIOutage   = 30 * time.Second
	// longestTTL is the longest TTL of the system (the informer lease).
	longestTTL = 10 * time.Second
	// DefaultFreeze and ShortFreeze: how long a member stays frozen. Past
	// minFreeze, so the lease and the partitions have moved when it
	// resumes; the short run keeps CI time.
	DefaultFreeze = 25 * time.Second
	ShortFreeze   = 14 * time.Second
	// minFreeze: the lease expires LEASE_TTL after the leader's last renewal
	// (at most LEASE_TTL before the freeze, renewals come every third of
	// it), a standby tries every quarter of it, and then takes a moment to
	// lead. It is also past minTakeoverDown.
	minFreeze = longestTTL + longestTTL/4 + time.Second
	// DefaultNodeFreeze: how long a frozen node stays stopped. Its peer
	// must find the replica's heartbeat gone (MEMBER_TTL), sweep (every 5s,
	// RUNNER_SWEEP_INTERVAL), probe each frozen runner twice (the probe
	// timeout, 1s, 8 at a time), start a runner per session and write it
	// Running: about 16s for the 12 or so sessions a replica holds here,
	// longer on a loaded host; the claims are read a second before the
	// thaw.
	DefaultNodeFreeze = 30 * time.Second
	// minNodeFreeze: MEMBER_TTL, a sweep interval, then 5s for the probes
	// and the restarts.
	minNodeFreeze = 2*group.DefaultMemberTTL + 5*time.Second
	// minTakeoverDown: a member loses its partitions MEMBER_TTL and up to a
	// third of it after its last heartbeat; the peer then needs a moment to
	// check them and write.
	minTakeoverDown = group.DefaultMemberTTL*4/3 + 2*time.Second
	// KubeOutageMargin is how much longer than the retry budget the
	// kube-apiserver stays down, so the head event of each member is
	// dead-lettered for certain.
	KubeOutageMargin = 30 * time.Second
	// DefaultNodeStoreLoss: how long the NATS node whose store is lost
	// stays down: as long as the node loss, past the raft election of
	// every stream it led, so its peers carry on without it and it must
	// catch up on everything, not only on its own lost store.
	DefaultNodeStoreLoss = 30 * time.Second
)

// ParseFlags reads the command line; usage errors go to w.
func ParseFlags(args []string, w io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(w)
	binDir := "bin"
	if exe, err := os.Executable(); err == nil {
		binDir = filepath.Dir(exe)
	}
	fs.StringVar(&c.BinDir, "bin-dir", binDir, "directory of the service binaries, demo-runner and nats-server (make build)")
	fs.StringVar(&c.KubeBinDir, "kube-bin-dir", "", "directory of kube-apiserver and etcd (default: KUBEBUILDER_ASSETS, else <bin-dir>/k8s)")
	fs.StringVar(&c.RepoRoot, "repo-root", "", "repository root, for the chart's CRD and RBAC (default: found above the working directory)")
	fs.StringVar(&c.RunDir, "run-dir", "", "directory for logs, NATS/etcd data and runner workspaces (default: a new temporary directory)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the run directory after a passing run (a failing run always keeps it)")
	fs.StringVar(&c.Report, "report", "docs/reliability.md", "write the Markdown report here (empty: no report)")
	fs.StringVar(&c.Commit, "commit", "", "the code under test, named in the report (make passes git describe)")
	fs.IntVar(&c.Changes, "changes", DefaultChanges, "API changes to drive (short: 300)")
	fs.Int64Var(&c.Seed, "seed", 0, "seed of the change and fault choices (0: from the clock; the report names it)")
	fs.BoolVar(&c.Short, "short", false, "the CI variant: 300 changes, one replica of each service killed, kube-reconciler GROUP_MAX_DELIVER=3 (shorter retry budget, shorter apiserver outage)")
	fs.DurationVar(&c.RestartDelay, "restart-delay", 2*time.Second, "how long a killed service stays down before it is restarted (a pod restart)")
	fs.DurationVar(&c.TakeoverDown, "takeover-down", 12*time.Second, "how long the last kube-reconciler killed stays down: past MEMBER_TTL and a third, so its peer takes its partitions and their status write-back over (a Deployment's replaced pod); 0: it too comes back after --restart-delay")
	fs.DurationVar(&c.KillSettle, "kill-settle", 15*time.Second, "quiet time after each kill before the next fault (> MEMBER_TTL + a sweep)")
	fs.DurationVar(&c.NodeLoss, "node-loss", 30*time.Second, "how long the killed NATS node stays down")
	fs.DurationVar(&c.NodeStoreLoss, "node-store-loss", DefaultNodeStoreLoss, "how long the full run's NATS node that comes back with an empty store (kill -9 of the events stream's leader, its store directory deleted while down: a pod rescheduled onto a new PersistentVolume) stays down; it must then catch up on every stream and bucket from its peers (0: none; the short run has none)")
	fs.DurationVar(&c.NATSOutage, "nats-outage", 3*longestTTL, "how long all NATS nodes stay down (3 x the longest TTL)")
	fs.DurationVar(&c.APIOutage, "api-outage", 0, "how long the ambient API is down as in a restart (watches ended, connections closed and refused; memapi keeps its state) (0: 75s; short: 30s)")
	fs.DurationVar(&c.KubeOutage, "kube-outage", 0, "how long kube-apiserver stays down (0: kube-reconciler's retry budget + 30s)")
	fs.DurationVar(&c.Freeze, "freeze", 0, "how long a frozen member (SIGSTOP of its process group: the informer leader, kube-reconciler-1, runner-manager-1) stays stopped before SIGCONT; past the lease TTL and MEMBER_TTL (0: 25s; short: 14s)")
	fs.DurationVar(&c.NodeFreeze, "node-freeze", DefaultNodeFreeze, "how long the full run's frozen node (SIGSTOP of runner-manager-1's process group and of every runner of it, then SIGCONT: a VM pause) stays stopped; past MEMBER_TTL and a sweep, so its peer takes its claims over (0: no node freeze; the short run has none)")
	fs.IntVar(&c.KubeMaxDeliver, "kube-max-deliver", 0, "kube-reconciler GROUP_MAX_DELIVER (0: the service default 5; short: 3)")
	fs.DurationVar(&c.KubeResync, "kube-resync", 15*time.Second, "kube-reconciler RESYNC_INTERVAL: repairs what its dead letters missed (below --converge-bound)")
	fs.DurationVar(&c.InformerAudit, "informer-kv-audit", 10*time.Second, "informer KV_AUDIT_INTERVAL: repairs objects-bucket entries a NATS store rebuild brought back (below --converge-bound)")
	fs.DurationVar(&c.Warmup, "warmup", 20*time.Second, "changes before the first fault")
	fs.DurationVar(&c.ConvergeTimeout, "converge-timeout", 0, "how long to wait for the system to converge after the last fault (0: 5m; short: 2m): long enough to tell late from lost")
	fs.DurationVar(&c.ConvergeBound, "converge-bound", 30*time.Second, "the pass mark: converged within this after the last fault (issue 14 acceptance: 30s)")
	fs.DurationVar(&c.SampleInterval, "sample-interval", 100*time.Millisecond, "process table sampling interval (runners alive twice)")
	fs.IntVar(&c.LocalCap, "local-cap", 24, "at most this many sessions want a local runner at once (witnesses included)")
	fs.IntVar(&c.Witnesses, "witnesses", 8, "local sessions started before the schedule and never changed by it: every fault meets runners it must leave alone")
	fs.IntVar(&c.KubeWitnesses, "kube-witnesses", 8, "kube sessions created before the schedule and never changed by it: AgenticSessions exist, in every replica's partitions, for the operator's writes while a kube-reconciler is down")
	fs.StringVar(&c.LogLevel, "log-level", "info", "LOG_LEVEL of every service")
	fs.StringVar(&c.Token, "token", "chaos-token", "API token of the in-memory API and the services")
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(w, "chaos: unexpected arguments %v\n", fs.Args())
		return Config{}, errors.New("unexpected arguments")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Short && !set["changes"] {
		c.Changes = ShortChanges
	}
	if c.Short && !set["kube-max-deliver"] {
		c.KubeMaxDeliver = ShortKubeMaxDeliver
	}
	if c.APIOutage == 0 {
		c.APIOutage = DefaultAPIOutage
		if c.Short {
			c.APIOutage = ShortAPIOutage
		}
	}
	if c.Freeze == 0 {
		c.Freeze = DefaultFreeze
		if c.Short {
			c.Freeze = ShortFreeze
		}
	}
	if c.ConvergeTimeout == 0 {
		c.ConvergeTimeout = DefaultConvergeTimeout
		if c.Short {
			c.ConvergeTimeout = ShortConvergeTimeout
		}
	}
	if err := c.finish(); err != nil {
		fmt.Fprintf(w, "chaos: %v\n", err)
		return Config{}, err
	}
	return c, nil
}

// finish fills derived defaults and validates.
func (c *Config) finish() error {
	var errs []error
	if c.Changes < 1 {
		errs = append(errs, fmt.Errorf("--changes %d: want >= 1", c.Changes))
	}
	if c.KubeMaxDeliver == 0 {
		c.KubeMaxDeliver = group.DefaultMaxDeliver
	}
	if c.KubeMaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("--kube-max-deliver %d: want >= 1", c.KubeMaxDeliver))
	}
	if c.KubeOutage == 0 {
		c.KubeOutage = RetryBudget(c.KubeMaxDeliver, group.DefaultBackoff) + KubeOutageMargin
	}
	if c.TakeoverDown != 0 && c.TakeoverDown <= minTakeoverDown {
		errs = append(errs, fmt.Errorf("--takeover-down %s: want 0 or more than %s (MEMBER_TTL and a third, then time for the peer's writes)", c.TakeoverDown, minTakeoverDown))
	}
	if c.Freeze < minFreeze {
		errs = append(errs, fmt.Errorf("--freeze %s: want at least %s (the lease TTL and a quarter, then a moment for the standby to lead)", c.Freeze, minFreeze))
	}
	if c.NodeFreeze != 0 && c.NodeFreeze < minNodeFreeze {
		errs = append(errs, fmt.Errorf("--node-freeze %s: want 0 or at least %s (MEMBER_TTL, a sweep, then the probes of the frozen runners and the restarts)", c.NodeFreeze, minNodeFreeze))
	}
	if c.NodeStoreLoss < 0 {
		errs = append(errs, fmt.Errorf("--node-store-loss %s: want 0 (none) or more", c.NodeStoreLoss))
	}
	if c.KubeWitnesses < 0 {
		errs = append(errs, fmt.Errorf("--kube-witnesses %d: want >= 0", c.KubeWitnesses))
	}
	if c.LocalCap < 1 || c.Witnesses < 0 || c.Witnesses > c.LocalCap {
		errs = append(errs, fmt.Errorf("--local-cap %d, --witnesses %d: want 0 <= witnesses <= local-cap, local-cap >= 1", c.LocalCap, c.Witnesses))
	}
	if c.SampleInterval <= 0 || c.RestartDelay < 0 || c.KillSettle < 0 || c.NodeLoss <= 0 || c.NATSOutage <= 0 || c.APIOutage < 0 || c.KubeOutage < 0 || c.Warmup < 0 || c.ConvergeTimeout <= 0 || c.ConvergeBound <= 0 {
		errs = append(errs, errors.New("durations: want sample-interval, node-loss, nats-outage, converge-timeout and converge-bound > 0, the others >= 0"))
	}
	abs, err := filepath.Abs(c.BinDir)
	if err != nil {
		errs = append(errs, fmt.Errorf("--bin-dir %q: %w", c.BinDir, err))
	}
	c.BinDir = abs
	if c.KubeBinDir == "" {
		c.KubeBinDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if c.KubeBinDir == "" {
		c.KubeBinDir = filepath.Join(c.BinDir, "k8s")
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	return errors.Join(errs...)
}

// RetryBudget is how long a consumer group keeps retrying one event before
// it dead-letters it: the NakWithDelay waits between maxDeliver tries
// (libs/group: attempt n waits backoff[min(n-1, len-1)]). An outage longer
// than this loses the event at the head of each member's queue.
func RetryBudget(maxDeliver int, backoff []time.Duration) time.Duration {
	var d time.Duration
	for attempt := 1; attempt < maxDeliver && len(backoff) > 0; attempt++ {
		d += backoff[min(attempt-1, len(backoff)-1)]
	}
	return d
}
