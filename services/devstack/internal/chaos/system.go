package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// Services and how many replicas of each run.
const (
	svcNATS           = "nats"
	svcEtcd           = "etcd"
	svcKubeAPIServer  = "kube-apiserver"
	svcMemapi         = "memapi"
	svcInformer       = "informer"
	svcKubeReconciler = "kube-reconciler"
	svcRunnerManager  = "runner-manager"
	svcAGUIProxy      = "agui-proxy"
	svcEventTally     = "event-tally"
	serviceReplicas   = 2
)

// Timing of the system's processes.
const (
	readyTimeout = 2 * time.Minute
	stopGrace    = 10 * time.Second
)

// member is one process of the system.
type member struct {
	name    string // instance name: "runner-manager-0", "nats-1", "etcd"
	service string
	proc    *proc.Process
	probe   proc.Probe
	// metrics is the base URL of /readyz and /metrics (services only).
	metrics string
	logFile *os.File
}

// exitRecord is one exit of a member.
type exitRecord struct {
	At      time.Time
	Member  string
	PID     int
	Err     string
	Planned bool // held by a fault
	Ran     time.Duration
}

// system runs every process of the control plane and its dependencies.
type system struct {
	cfg      Config
	runDir   string
	workRoot string
	log      io.Writer

	nats       []natsNode
	natsURLs   string
	kube       *kubePlane
	apiGRPC    string
	apiREST    string
	faultsURL  string
	proxyURLs  []string
	tallyURL   string
	ports      *portAlloc
	runnerSize int

	members []*member
	byName  map[string]*member

	mu    sync.Mutex // guards exits
	exits []exitRecord

	g *errgroup.Group
	// spawn runs a member's supervisor for the processes' lifetime (begin).
	spawn func(*member)
}

// runnerRange is how many sessions one runner-manager may run: every
// session of the run must fit on one replica while the other is dead.
func runnerRange(localCap int) int { return 2*localCap + 8 }

// runnerPorts is the size of a runner-manager's port range: three times
// its sessions, as a released port waits out PORT_REUSE_DELAY before
// another runner gets it (the sessions the faults move and restart must
// find ports meanwhile).
func runnerPorts(sessions int) int { return 3 * sessions }

// fixedPorts is how many ports the system takes besides the runner ranges:
// NATS 3 x 3, etcd 2, kube-apiserver 1, memapi 3, 9 services' metrics, 2
// proxies.
const fixedPorts = 9 + 2 + 1 + 3 + 9 + 2

func newSystem(cfg Config, runDir string, log io.Writer) (*system, error) {
	s := &system{cfg: cfg, runDir: runDir, log: log, byName: map[string]*member{}, runnerSize: runnerRange(cfg.LocalCap)}
	s.workRoot = filepath.Join(runDir, "workspaces")
	for _, d := range []string{"logs", "nats", "kube", "workspaces", "pids"} {
		if err := os.MkdirAll(filepath.Join(runDir, d), 0o750); err != nil {
			return nil, fmt.Errorf("create run dir: %w", err)
		}
	}
	need := fixedPorts + serviceReplicas*runnerPorts(s.runnerSize)
	low, err := freePortBlock(need)
	if err != nil {
		return nil, err
	}
	s.ports = &portAlloc{next: low, end: low + need}
	for i := range natsReplicas {
		s.nats = append(s.nats, natsNode{Name: fmt.Sprintf("nats-%d", i), StoreDir: filepath.Join(runDir, "nats", fmt.Sprintf("nats-%d", i))})
	}
	var urls []string
	for i := range s.nats {
		s.nats[i].ClientPort, s.nats[i].ClusterPort, s.nats[i].MonitorPort = s.ports.take(), s.ports.take(), s.ports.take()
		urls = append(urls, s.nats[i].clientURL())
	}
	s.natsURLs = strings.Join(urls, ",")
	etcdPort, etcdPeer, apiPort := s.ports.take(), s.ports.take(), s.ports.take()
	s.kube, err = newKubePlane(filepath.Join(runDir, "kube"), cfg.KubeBinDir, etcdPort, apiPort)
	if err != nil {
		return nil, err
	}
	for _, n := range s.nats {
		path, err := writeNATSConfig(filepath.Join(runDir, "nats"), n, s.nats)
		if err != nil {
			return nil, err
		}
		if err := s.add(n.Name, svcNATS, filepath.Join(cfg.BinDir, "nats-server"), []string{"-c", path}, nil, natsProbe(n), ""); err != nil {
			return nil, err
		}
	}
	if err := s.add(svcEtcd, svcEtcd, filepath.Join(cfg.KubeBinDir, "etcd"), s.kube.etcdArgs(etcdPeer), nil, s.kube.etcdProbe(), ""); err != nil {
		return nil, err
	}
	if err := s.add(svcKubeAPIServer, svcKubeAPIServer, filepath.Join(cfg.KubeBinDir, "kube-apiserver"), s.kube.apiserverArgs(), nil, s.kube.apiserverProbe(), ""); err != nil {
		return nil, err
	}
	s.apiGRPC = addr(s.ports.take())
	s.apiREST = "http://" + addr(s.ports.take())
	faults := addr(s.ports.take())
	s.faultsURL = "http://" + faults
	apiEnv := map[string]string{
		"AMBIENT_API_TOKEN":  cfg.Token,
		"MEMAPI_GRPC_ADDR":   s.apiGRPC,
		"MEMAPI_REST_ADDR":   strings.TrimPrefix(s.apiREST, "http://"),
		"MEMAPI_FAULTS_ADDR": faults,
		"LOG_LEVEL":          cfg.LogLevel,
	}
	if err := s.add(svcMemapi, svcMemapi, filepath.Join(cfg.BinDir, "memapi"), nil, apiEnv,
		proc.HTTPProbe(&http.Client{Timeout: 2 * time.Second}, s.apiREST+"/healthcheck", ""), ""); err != nil {
		return nil, err
	}
	return s, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// add declares a member; env is set on top of the harness' environment.
func (s *system) add(name, service, path string, args []string, env map[string]string, probe proc.Probe, metrics string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w (run `make build nats-server`)", name, err)
	}
	f, err := os.OpenFile(filepath.Join(s.runDir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file of %s: %w", name, err)
	}
	m := &member{name: name, service: service, probe: probe, metrics: metrics, logFile: f}
	m.proc = proc.New(proc.Spec{
		Name:    name,
		Path:    path,
		Args:    args,
		Env:     proc.Env(env),
		Out:     f,
		PIDFile: filepath.Join(s.runDir, "pids", name+".pid"),
		OnStart: func(pid int) {
			fmt.Fprintf(f, "=== chaos: %s started, pid %d, %s\n", name, pid, time.Now().Format(time.RFC3339Nano))
		},
		OnExit: func(e proc.Exit) {
			fmt.Fprintf(f, "=== chaos: %s exited (%s), held=%t, %s\n", name, proc.ExitText(e.Err), e.Held, time.Now().Format(time.RFC3339Nano))
			s.mu.Lock()
			s.exits = append(s.exits, exitRecord{At: time.Now(), Member: name, PID: e.PID, Err: proc.ExitText(e.Err), Planned: e.Held, Ran: e.Ran})
			s.mu.Unlock()
			if !e.Held {
				fmt.Fprintf(s.log, "chaos: %s exited on its own (%s); restarting in %s\n", name, proc.ExitText(e.Err), e.Restart)
			}
		},
	})
	s.members = append(s.members, m)
	s.byName[name] = m
	return nil
}

// addServices declares the control plane's services, once the projects
// exist: the executors select sessions by project id.
func (s *system) addServices(localProjects, kubeProjects []string) error {
	common := func(metrics string, extra map[string]string) map[string]string {
		env := map[string]string{
			"AMBIENT_API_TOKEN":        s.cfg.Token,
			"AMBIENT_GRPC_SERVER_ADDR": s.apiGRPC,
			"NATS_URL":                 s.natsURLs,
			"LOG_LEVEL":                s.cfg.LogLevel,
			"METRICS_ADDR":             metrics,
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	type decl struct {
		service string
		replica int
		extra   map[string]string
	}
	var decls []decl
	for r := range serviceReplicas {
		decls = append(decls, decl{svcInformer, r, map[string]string{
			"INSTANCE_ID":       instanceName(svcInformer, r),
			"STREAM_REPLICAS":   strconv.Itoa(natsReplicas),
			"KV_AUDIT_INTERVAL": s.cfg.InformerAudit.String(),
		}})
	}
	decls = append(decls, decl{svcEventTally, 0, map[string]string{"MEMBER_ID": instanceName(svcEventTally, 0)}})
	for r := range serviceReplicas {
		decls = append(decls,
			decl{svcRunnerManager, r, map[string]string{
				"MEMBER_ID":            instanceName(svcRunnerManager, r),
				"BUCKET_REPLICAS":      strconv.Itoa(natsReplicas),
				"RUNNER_PROJECTS":      strings.Join(localProjects, ","),
				"LOCAL_RUNNER_COMMAND": filepath.Join(s.cfg.BinDir, "demo-runner"),
				"LOCAL_WORKSPACE_ROOT": filepath.Join(s.workRoot, instanceName(svcRunnerManager, r)),
				"LOCAL_PORT_RANGE":     s.ports.takeRange(runnerPorts(s.runnerSize)),
				"LOCAL_MAX_SESSIONS":   strconv.Itoa(s.runnerSize),
				// Within the member's own stopGrace, so a clean stop ends
				// its runners' process groups before its SIGKILL.
				"LOCAL_STOP_GRACE": (stopGrace / 2).String(),
			}},
			decl{svcAGUIProxy, r, map[string]string{
				"LOCAL_PROXY_ADDR": addr(s.ports.take()),
				"AGUI_AUTH":        "none",
			}},
			decl{svcKubeReconciler, r, map[string]string{
				"MEMBER_ID":             instanceName(svcKubeReconciler, r),
				"KUBECONFIG":            s.kube.kubeconfig,
				"KUBE_SESSION_SELECTOR": "projects=" + strings.Join(kubeProjects, ","),
				"GROUP_MAX_DELIVER":     strconv.Itoa(s.cfg.KubeMaxDeliver),
				"RESYNC_INTERVAL":       s.cfg.KubeResync.String(),
			}},
		)
	}
	for _, d := range decls {
		name := instanceName(d.service, d.replica)
		metrics := addr(s.ports.take())
		base := "http://" + metrics
		env := common(metrics, d.extra)
		if d.service == svcAGUIProxy {
			s.proxyURLs = append(s.proxyURLs, "http://"+d.extra["LOCAL_PROXY_ADDR"])
			// agui-proxy talks to no API.
			delete(env, "AMBIENT_API_TOKEN")
			delete(env, "AMBIENT_GRPC_SERVER_ADDR")
		}
		if d.service == svcEventTally {
			s.tallyURL = base
		}
		probe := proc.HTTPProbe(&http.Client{Timeout: 2 * time.Second}, base+"/readyz", "")
		if err := s.add(name, d.service, filepath.Join(s.cfg.BinDir, d.service), nil, env, probe, base); err != nil {
			return err
		}
	}
	return nil
}

// begin makes ctx the lifetime of every process started from now on.
func (s *system) begin(ctx context.Context) {
	g, gctx := errgroup.WithContext(ctx)
	s.g = g
	s.spawn = func(m *member) { g.Go(func() error { return m.proc.Run(gctx) }) }
}

// start starts the named members together and waits until each is ready.
func (s *system) start(ctx context.Context, names ...string) error {
	for _, n := range names {
		s.spawn(s.byName[n])
	}
	deadline := time.Now().Add(readyTimeout)
	for _, n := range names {
		if err := proc.WaitReady(ctx, s.byName[n].probe, deadline); err != nil {
			return fmt.Errorf("%s did not become ready (log: %s): %w", n, filepath.Join(s.runDir, "logs", n+".log"), err)
		}
	}
	return nil
}

// names returns the member names of service, in order.
func (s *system) names(service string) []string {
	var out []string
	for _, m := range s.members {
		if m.service == service {
			out = append(out, m.name)
		}
	}
	return out
}

// stop stops every member in reverse start order, then kills runner
// processes of this run that outlived their runner-manager.
func (s *system) stop(cancel context.CancelFunc, table *procTable) error {
	cancel()
	for i := len(s.members) - 1; i >= 0; i-- {
		m := s.members[i]
		m.proc.Release()
		// A member a failed run left frozen would ignore SIGTERM.
		_ = m.proc.Signal(syscall.SIGCONT) //nolint:errcheck // best effort; Stop's SIGKILL ends it anyway
		if err := m.proc.Stop(context.Background(), stopGrace); err != nil {
			fmt.Fprintf(s.log, "chaos: stop %s: %v\n", m.name, err)
		}
	}
	var err error
	if s.g != nil {
		err = s.g.Wait()
	}
	if table != nil {
		// Stopped runners too: a node freeze that failed half-way may leave
		// some stopped, and SIGKILL ends a stopped process as well.
		if live, stopped, serr := table.scanStates(); serr == nil {
			for _, r := range append(live, stopped...) {
				fmt.Fprintf(s.log, "chaos: runner %d of session %s outlived its runner-manager; killing it\n", r.PID, r.Session)
				_ = syscall.Kill(r.PID, syscall.SIGKILL) //nolint:errcheck // best effort; it may have exited meanwhile
			}
		}
	}
	for _, m := range s.members {
		_ = m.logFile.Close() //nolint:errcheck // every write went through already
	}
	return err
}

// exitLog returns every exit so far.
func (s *system) exitLog() []exitRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]exitRecord(nil), s.exits...)
}

// settle waits until every member has answered its probe and none has
// exited on its own for quiet: services that give up while JetStream
// places its first R3 assets restart a few times on a loaded host, and a
// fault schedule started before that would blame their start on the faults.
func (s *system) settle(ctx context.Context, quiet, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	calm := time.Now()
	for {
		ready := true
		for _, m := range s.members {
			if err := m.probe(ctx); err != nil {
				ready = false
				break
			}
		}
		for _, e := range s.exitLog() {
			if !e.Planned && e.At.After(calm) {
				calm = e.At
			}
		}
		if !ready {
			calm = time.Now()
		}
		if time.Since(calm) >= quiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the system did not settle (every probe ready, no exit for %s) within %s", quiet, limit)
		}
		if err := sleepUntil(ctx, time.Now().Add(time.Second)); err != nil {
			return err
		}
	}
}
