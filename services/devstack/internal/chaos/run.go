package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/apiclient"
)

// ErrAuditFailed is returned by Run when the run completed and an audit
// check failed (exit 1); any other error means the harness could not run
// the suite (exit 2).
var ErrAuditFailed = errors.New("audit failed")

// convergePoll is how often the system is observed while it converges.
const convergePoll = 2 * time.Second

// The system must be ready and free of exits for settleQuiet before the
// schedule starts, within settleLimit.
const (
	settleQuiet = 15 * time.Second
	settleLimit = 3 * time.Minute
)

// Run runs one chaos suite: it starts the system, drives the changes while
// injecting the faults, waits for the system to converge, audits it, prints
// the result line and writes the report.
func Run(ctx context.Context, cfg Config, out io.Writer) (err error) {
	runDir, cleanup, err := prepareRunDir(cfg)
	if err != nil {
		return err
	}
	passed := false
	defer func() { cleanup(passed, out) }()
	h := &harness{cfg: cfg, runDir: runDir, out: out}
	defer func() {
		if cerr := h.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := h.start(ctx); err != nil {
		return err
	}
	t0, inj, err := h.schedule(ctx)
	if err != nil {
		return err
	}
	end := time.Now()
	fmt.Fprintf(out, "chaos: t=%s last fault over; waiting up to %s to converge\n", since(t0), cfg.ConvergeTimeout)
	in := h.judge(ctx, inj, t0, end)
	res := audit(in)
	fmt.Fprintln(out, res.Line(in.Converged))
	for _, c := range res.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(out, "  %s %s: %s\n", mark, c.Name, c.Detail)
	}
	rep := report{cfg: cfg, plan: h.plan, t0: t0, end: end, begun: h.begun, in: in, res: res, runDir: runDir, cpus: runtime.NumCPU(),
		signals: scanSignals(filepath.Join(runDir, "logs")), loadStart: h.loadStart, loadEnd: loadAvg()}
	if err := h.write(rep); err != nil {
		return err
	}
	if !res.Passed() {
		return ErrAuditFailed
	}
	passed = true
	return nil
}

// harness holds one run's parts from start to close.
type harness struct {
	cfg    Config
	runDir string
	out    io.Writer

	plan      Plan
	sys       *system
	api       *apiclient.Client
	drv       *driver
	op        *operator
	smp       *sampler
	nv        *natsView
	begun     time.Time
	loadStart string
	// closers undo start, run in reverse order by close.
	closers []func() error
}

// start brings the system up: infrastructure, projects, services, then the
// witnesses once everything has settled.
func (h *harness) start(ctx context.Context) error {
	cfg := h.cfg
	repoRoot := cfg.RepoRoot
	if repoRoot == "" {
		var err error
		if repoRoot, err = findRepoRoot(); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x636861)) //nolint:gosec // a reproducible schedule, not a secret
	h.plan = NewPlan(planConfig(cfg), rng)
	fmt.Fprintf(h.out, "chaos: seed %d, %d changes over %s, %d faults; run dir %s\n", cfg.Seed, cfg.Changes, h.plan.End, len(h.plan.Faults), h.runDir)
	sys, err := newSystem(cfg, h.runDir, h.out)
	if err != nil {
		return err
	}
	h.sys = sys
	table, err := newProcTable("/proc", filepath.Join(cfg.BinDir, "demo-runner"), sys.workRoot)
	if err != nil {
		return err
	}
	// The processes outlive ctx: a cancelled run still stops them in order.
	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	sys.begin(procCtx)
	h.closers = append(h.closers, func() error {
		if err := sys.stop(stopProcs, table); err != nil {
			return fmt.Errorf("stop the system: %w", err)
		}
		return nil
	})
	h.begun, h.loadStart = time.Now(), loadAvg()
	if err := startInfra(ctx, sys, repoRoot, h.out); err != nil {
		return err
	}
	if h.api, err = apiclient.New(apiclient.Config{Addr: sys.apiGRPC, Token: cfg.Token}); err != nil {
		return fmt.Errorf("API client: %w", err)
	}
	h.closers = append(h.closers, h.api.Close)
	h.drv = newDriver(h.api, newRESTPhases(sys.apiREST, cfg.Token), cfg.LocalCap, rng)
	if err := h.drv.setup(ctx); err != nil {
		return err
	}
	if err := sys.addServices(h.drv.projectIDs(true), h.drv.projectIDs(false)); err != nil {
		return err
	}
	h.smp = newSampler(table, cfg.SampleInterval)
	smpCtx, stopSampler := context.WithCancel(ctx)
	smpDone := make(chan struct{})
	go func() { // owned by the harness: ends with stopSampler in close
		defer close(smpDone)
		h.smp.Run(smpCtx)
	}()
	h.closers = append(h.closers, func() error { stopSampler(); <-smpDone; return nil })
	if err := startServices(ctx, sys, h.out); err != nil {
		return err
	}
	if err := sys.settle(ctx, settleQuiet, settleLimit); err != nil {
		return err
	}
	if err := h.drv.witnesses(ctx, cfg.Witnesses, cfg.KubeWitnesses); err != nil {
		return err
	}
	if h.nv, err = connectNATS(sys.natsURLs); err != nil {
		return err
	}
	h.closers = append(h.closers, func() error { h.nv.Close(); return nil })
	fmt.Fprintf(h.out, "chaos: system ready in %s\n", time.Since(h.begun).Round(time.Second))
	return nil
}

// planConfig shapes the plan of a run of cfg.
func planConfig(cfg Config) PlanConfig {
	return PlanConfig{
		Changes: cfg.Changes, Kills: Kills(cfg.Short), Warmup: cfg.Warmup, RestartDelay: cfg.RestartDelay, TakeoverDown: cfg.TakeoverDown,
		KillSettle: cfg.KillSettle, NodeLoss: cfg.NodeLoss, NodeStoreLoss: NodeStoreLoss(cfg), NATSOutage: cfg.NATSOutage, APIOutage: cfg.APIOutage, KubeOutage: cfg.KubeOutage,
		Freezes: Freezes(), Freeze: cfg.Freeze, RunnerKills: RunnerKills(cfg.Short), NodeFreezes: nodeFreezes(cfg), NodeFreeze: cfg.NodeFreeze,
		OverLimit: OverLimit(cfg.Short),
	}
}

// nodeFreezes are the node freezes of cfg's plan: none when --node-freeze
// is 0.
func nodeFreezes(cfg Config) []string {
	if cfg.NodeFreeze == 0 {
		return nil
	}
	return NodeFreezes(cfg.Short)
}

// schedule runs the plan: changes and faults side by side, from t0.
func (h *harness) schedule(ctx context.Context) (time.Time, *injector, error) {
	h.op = newOperator(h.sys.kube, h.cfg.Seed, func(format string, args ...any) { fmt.Fprintf(h.out, format, args...) })
	inj := &injector{sys: h.sys, drv: h.drv, smp: h.smp, nv: h.nv, op: h.op, log: h.out}
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inj.run(gctx, h.plan, t0) })
	g.Go(func() error { return drive(gctx, h.drv, h.plan, t0, h.out) })
	g.Go(func() error { return h.op.run(gctx, t0, h.plan.Quiet.From, operatorWrites(h.cfg.Changes)) })
	if err := g.Wait(); err != nil {
		return t0, inj, fmt.Errorf("chaos schedule: %w", err)
	}
	return t0, inj, nil
}

// judge waits for the system to converge and gathers what the audit needs.
func (h *harness) judge(ctx context.Context, inj *injector, t0, end time.Time) auditInput {
	obsr := &observer{api: h.api, sys: h.sys, smp: h.smp, nv: h.nv, namespaces: projectNamespaces(h.drv), hc: &http.Client{Timeout: 5 * time.Second}}
	// looks stays a nil interface when the file cannot be made: a nil
	// *os.File in it would not compare equal to nil in converge.
	var looks io.Writer
	f, err := os.Create(filepath.Join(h.runDir, "converge.txt"))
	if err != nil {
		fmt.Fprintf(h.out, "chaos: %v; the looks while converging are not kept\n", err)
	} else {
		looks = f
	}
	converged, obs, trend, obsErr := converge(ctx, obsr, h.drv, end, h.cfg.ConvergeTimeout, looks)
	if f != nil {
		if err := f.Close(); err != nil {
			fmt.Fprintf(h.out, "chaos: close %s: %v\n", f.Name(), err)
		}
	}
	sessions, projects, journal, deletes := h.drv.snapshot()
	streams, streamsErr := h.nv.streams(ctx)
	evs, first, evsErr := h.nv.readEventsRetrying(ctx, 0, kvAgreeLimit, kvAgreePoll)
	objects := h.nv.readObjectsAgreeing(ctx, evs, first, evsErr, kvAgreeLimit, kvAgreePoll)
	faults := inj.faults()
	for i, f := range faults {
		if f.Kind != FaultNodeStoreLoss || f.StoreLoss == nil {
			continue
		}
		// Still current at the end: a node that caught up and fell behind
		// again (the NATS outage, the load) would be one replica short.
		sl := *f.StoreLoss
		_, sl.EndBehind = h.nv.awaitCurrent(ctx, f.Target, sl.replicated(), time.Now().Add(kvAgreeLimit))
		faults[i].StoreLoss = &sl
	}
	return auditInput{
		Sessions: sessions, Projects: projects, Deletes: deletes, Journal: journal,
		Obs: obs, ObsErr: obsErr, Sampler: h.smp.Stats(), Operator: h.op.Stats(),
		Before: inj.beforeOutage, After: inj.afterOutage,
		Exits: h.sys.exitLog(), ScheduleStart: t0, Faults: faults, Streams: streams, StreamsErr: streamsErr, Events: evs, EventsErr: evsErr, Objects: objects,
		Converged: converged, ConvergeBound: h.cfg.ConvergeBound, ConvergeLimit: h.cfg.ConvergeTimeout, Trend: trend,
	}
}

// write leaves the record of the run: the change journal and the faults as
// JSON in the run directory, the report there and at --report.
func (h *harness) write(rep report) error {
	if err := writeJSON(filepath.Join(h.runDir, "changes.json"), rep.in.Journal); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(h.runDir, "faults.json"), rep.in.Faults); err != nil {
		return err
	}
	md := []byte(rep.markdown())
	// A copy stays with the logs it refers to (kept when the run failed).
	if err := os.WriteFile(filepath.Join(h.runDir, "report.md"), md, 0o600); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if h.cfg.Report != "" {
		if err := os.WriteFile(h.cfg.Report, md, 0o644); err != nil { //nolint:gosec // a document in the repository
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Fprintf(h.out, "chaos: report written to %s\n", h.cfg.Report)
	}
	return nil
}

// close undoes start in reverse order and returns the first error.
func (h *harness) close() error {
	var first error
	for i := len(h.closers) - 1; i >= 0; i-- {
		if err := h.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// startInfra starts NATS, the Kubernetes control plane and the API.
func startInfra(ctx context.Context, sys *system, repoRoot string, out io.Writer) error {
	infra := append(sys.names(svcNATS), svcEtcd, svcMemapi)
	if err := sys.start(ctx, infra...); err != nil {
		return err
	}
	if err := sys.start(ctx, svcKubeAPIServer); err != nil {
		return err
	}
	if err := sys.kube.bootstrap(ctx, repoRoot); err != nil {
		return fmt.Errorf("install the chart's CRD and RBAC: %w", err)
	}
	fmt.Fprintf(out, "chaos: NATS cluster (%d nodes), etcd, kube-apiserver and the API ready\n", natsReplicas)
	return nil
}

// startServices starts the control plane's services all at once, as a
// Helm install does: nothing orders them, and the system must not depend
// on an order (issue 14 finding 5: a consumer that created the dead-letter
// stream before the informer created the events stream made it R1).
func startServices(ctx context.Context, sys *system, out io.Writer) error {
	var all []string
	for _, svc := range []string{svcInformer, svcEventTally, svcRunnerManager, svcAGUIProxy, svcKubeReconciler} {
		all = append(all, sys.names(svc)...)
	}
	if err := sys.start(ctx, all...); err != nil {
		return err
	}
	fmt.Fprintf(out, "chaos: %d services ready\n", len(all))
	return nil
}

// drive makes the plan's changes at their times.
func drive(ctx context.Context, drv *driver, plan Plan, t0 time.Time, out io.Writer) error {
	for i, c := range plan.Changes {
		if err := sleepUntil(ctx, t0.Add(c.At)); err != nil {
			return err
		}
		rec := drv.apply(ctx, c.Op)
		if rec.Result == resultError {
			fmt.Fprintf(out, "chaos: change %d %s %s: %s\n", i+1, rec.Op, rec.Object, rec.Err)
		}
		if n := i + 1; n%100 == 0 || n == len(plan.Changes) {
			fmt.Fprintf(out, "chaos: t=%s %d/%d changes\n", since(t0), n, len(plan.Changes))
		}
	}
	return nil
}

// trendPoint is how many objects were wrong (or unreadable) at one look
// while the system converged.
type trendPoint struct {
	After time.Duration
	Wrong int // -1: the look failed
}

// converge observes the system until every object is in its desired state
// and counted, or limit passes. It returns the time from end to that
// moment (-1 if it never came), the last observation, and the number of
// wrong objects at each look: falling means late, flat means lost. What
// was wrong at each look goes to looks (the run directory's converge.txt)
// when it is not nil: a run that converges late is explained there.
func converge(ctx context.Context, o *observer, drv *driver, end time.Time, limit time.Duration, looks io.Writer) (time.Duration, observation, []trendPoint, error) {
	deadline := end.Add(limit)
	var last observation
	var lastErr error
	var trend []trendPoint
	for {
		sessions, projects, _, _ := drv.snapshot()
		var want, gone []string
		for _, s := range sessions {
			switch {
			case s.Deleted || !s.Project.Local:
			case s.Running:
				want = append(want, s.ID)
			case s.RunnerKilled:
				gone = append(gone, s.ID)
			}
		}
		obs, err := o.observe(ctx, want, gone)
		last, lastErr = obs, err
		wrong := -1
		if err == nil && obs.OwnersErr == "" && obs.KubeErr == "" && obs.TallyErr == "" {
			objects, tally := objectProblems(sessions, projects, obs), tallyProblems(sessions, projects, obs)
			wrong = len(objects) + tally.missing
			if looks != nil && wrong > 0 {
				fmt.Fprintf(looks, "after %s: %d wrong\n", obs.At.Sub(end).Round(time.Second), wrong) //nolint:errcheck // a diagnostic
				for _, id := range sortedKeys(objects) {
					fmt.Fprintf(looks, "  %s: %s\n", id, strings.Join(objects[id], "; ")) //nolint:errcheck // a diagnostic
				}
				for _, l := range tally.lines {
					fmt.Fprintf(looks, "  %s\n", l) //nolint:errcheck // a diagnostic
				}
			}
		}
		trend = append(trend, trendPoint{After: obs.At.Sub(end), Wrong: wrong})
		if wrong == 0 {
			return obs.At.Sub(end), last, trend, nil
		}
		if time.Now().After(deadline) {
			return -1, last, trend, lastErr
		}
		if err := sleepUntil(ctx, time.Now().Add(convergePoll)); err != nil {
			return -1, last, trend, err
		}
	}
}

func projectNamespaces(d *driver) []string {
	_, ps, _, _ := d.snapshot()
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Namespace()
	}
	return out
}

// prepareRunDir creates the run directory. cleanup removes it after a
// passing run unless Keep is set; otherwise it says where it is.
func prepareRunDir(cfg Config) (string, func(passed bool, out io.Writer), error) {
	dir := cfg.RunDir
	if dir == "" {
		d, err := os.MkdirTemp("", "ambient-chaos-")
		if err != nil {
			return "", nil, fmt.Errorf("run dir: %w", err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", nil, fmt.Errorf("run dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("run dir: %w", err)
	}
	return abs, func(passed bool, out io.Writer) {
		if passed && !cfg.Keep {
			if err := os.RemoveAll(abs); err != nil {
				fmt.Fprintf(out, "chaos: remove %s: %v\n", abs, err)
			}
			return
		}
		fmt.Fprintf(out, "chaos: logs, data and pid files kept in %s (logs/<process>.log)\n", abs)
	}, nil
}

// findRepoRoot walks up from the working directory to go.work.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.work) not found above the working directory: pass --repo-root")
		}
		dir = parent
	}
}

// writeJSON writes v to path, for whoever reads the run directory later.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// loadAvg is the 1-minute load average, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
