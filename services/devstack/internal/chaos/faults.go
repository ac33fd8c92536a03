package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/services/devstack/internal/proc"
)

// faultRecord is one fault as it happened.
type faultRecord struct {
	Fault
	// Target is what the fault hit: the instance, the NATS node, the
	// oversize session's id, the over-limit local session's id.
	Target string
	// Start, Down0 and Restored: the fault began, every target was down
	// (an outage), the target answered again (ready) after its release.
	Start, Down0, Restored time.Time
	Note                   string
	Err                    string
	// Took is, for the oversize object, how long its stop took to take
	// effect (phase Stopped, no runner); -1: not within oversizeStopLimit.
	Took time.Duration
	// TakeoverWrites and TakenOver, for a takeover kill (Fault.Takeover):
	// the status writes made in the dead replica's partitions while it was
	// down, and how many of them had reached their sessions in the API
	// before it restarted, carried by its peer. TakeoverTook is how long
	// after the writes the last of those arrived.
	TakeoverWrites, TakenOver int
	TakeoverTook              time.Duration
	// Moved, for a freeze: just before the thaw, the frozen member's lease
	// (informer) or partitions (kube-reconciler, runner-manager) were held
	// by another.
	Moved bool
	// Restarted, for a runner kill: pids of runners of the session seen
	// after the kill until it ended (none: it was not started again).
	Restarted []int
	// For a node freeze (FaultNodeFreeze); Moved is then whether its
	// partitions and every claim of it (KV ambient-runners) had moved just
	// before the thaw. Thawed is when the SIGCONTs were sent; Frozen the
	// runner processes stopped with the replica; StillClaimed the sessions
	// whose record still named it just before the thaw; Old the frozen
	// runners of the sessions whose claim had moved, with how long each
	// lived after the thaw; AfterThaw the changes of those sessions the API
	// announced from the thaw until thawWatch after it; WatchErr why they
	// could not be watched.
	Thawed       time.Time       `json:",omitzero"`
	Frozen       []frozenRunner  `json:",omitempty"`
	StillClaimed []string        `json:",omitempty"`
	Old          []oldRunner     `json:",omitempty"`
	AfterThaw    []sessionChange `json:",omitempty"`
	WatchErr     string          `json:",omitempty"`
	// OverLimit, for the sessions over the payload limit (FaultOverLimit):
	// what the watch beside the next faults saw.
	OverLimit *overLimitRecord `json:",omitempty"`
	// StoreLoss, for a NATS node back with an empty store
	// (FaultNodeStoreLoss): its catch-up.
	StoreLoss *storeLossRecord `json:",omitempty"`
}

// placement is where every session's runner was at one moment: the process
// table, and the owners in KV ambient-runners.
type placement struct {
	At      time.Time
	Runners map[string][]runnerProc
	Owners  map[string]registry.Endpoint
}

// injector runs the fault schedule against the system.
type injector struct {
	sys *system
	drv *driver
	smp *sampler
	nv  *natsView
	op  *operator // writes statuses while a kube-reconciler is dead; nil: none
	log io.Writer

	mu      sync.Mutex    // guards records
	records []faultRecord // guarded by mu
	// watchers are the goroutines timing the oversize stop, watching
	// the over-limit sessions and taking the NATS outage's after-snapshot;
	// run waits for them.
	watchers sync.WaitGroup
	// beforeOutage and afterOutage bracket the NATS outage; written by run
	// and its watchers, read after it returned.
	beforeOutage, afterOutage placement
}

// run injects the plan's faults at their times from t0; it returns after
// the last one (or when ctx is done).
func (in *injector) run(ctx context.Context, plan Plan, t0 time.Time) error {
	defer in.watchers.Wait()
	for _, f := range plan.Faults {
		if err := sleepUntil(ctx, t0.Add(f.At)); err != nil {
			return err
		}
		rec := faultRecord{Fault: f, Target: f.Target, Start: time.Now()}
		fmt.Fprintf(in.log, "chaos: t=%s fault: %s %s\n", since(t0), f.Kind, f.Target)
		err := in.inject(ctx, &rec, t0)
		if err != nil {
			rec.Err = err.Error()
			fmt.Fprintf(in.log, "chaos: fault %s %s: %v\n", f.Kind, rec.Target, err)
		}
		in.mu.Lock()
		in.records = append(in.records, rec)
		i := len(in.records) - 1
		in.mu.Unlock()
		if f.Kind == FaultOversize && rec.Err == "" {
			in.watchers.Go(func() { in.timeStop(ctx, i, rec.Target, rec.Restored) })
		}
		if f.Kind == FaultOverLimit && rec.Err == "" {
			in.watchers.Go(func() { in.watchOverLimit(ctx, i, rec, t0) })
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return sleepUntil(ctx, t0.Add(plan.End))
}

func (in *injector) inject(ctx context.Context, rec *faultRecord, t0 time.Time) error {
	switch rec.Kind {
	case FaultKill:
		if in.op != nil && rec.killsReconciler() {
			// The status write-back's failover: statuses written while the
			// replica is dead.
			return in.outageThen(ctx, rec, kill9, []string{rec.Target}, func(ctx context.Context) error {
				// The dead member keeps its partitions in the mapping until
				// its heartbeat expires (MEMBER_TTL, longer than the
				// downtime): read them now.
				inDead, err := in.nv.partitionsOf(ctx, svcKubeReconciler, rec.Target)
				note, written := in.op.writeWhileDown(ctx, rec.Target, in.drv.keepKube, inDead)
				rec.Note = note
				if err != nil {
					rec.Note += "; " + err.Error()
				}
				if rec.Takeover && len(written) > 0 {
					// Before the restart: what reaches the API by then was
					// carried by the peer.
					rec.TakeoverWrites = len(written)
					missing, took := in.awaitCarried(ctx, written, rec.Down0.Add(rec.Down-takeoverMargin))
					rec.TakenOver, rec.TakeoverTook = len(written)-len(missing), took
					rec.Note += fmt.Sprintf("; its peer carried %d of them to the API before the restart", rec.TakenOver)
					if rec.TakenOver > 0 {
						rec.Note += fmt.Sprintf(", the last %s after the writes", took.Round(100*time.Millisecond))
					}
					if len(missing) > 0 {
						rec.Note += "; not carried: " + strings.Join(missing, ", ")
					}
				}
				return nil
			})
		}
		return in.outage(ctx, rec, kill9, []string{rec.Target})
	case FaultNodeLoss:
		leader, err := streamLeader(ctx, in.sys.nats, eventsStream)
		if err != nil {
			leader = in.sys.nats[0].Name
			rec.Note = "events stream leader unknown (" + err.Error() + "); killed " + leader
		} else {
			rec.Note = "the leader of " + eventsStream
		}
		rec.Target = leader
		return in.outage(ctx, rec, kill9, []string{leader})
	case FaultNodeStoreLoss:
		return in.storeLoss(ctx, rec)
	case FaultNATSOutage:
		in.beforeOutage = in.place(ctx)
		rec.Target = "all NATS nodes"
		err := in.outage(ctx, rec, cleanStop, in.sys.names(svcNATS))
		// After the settle time: where runners ended up once the groups
		// and claim sweeps had their turn. Taken beside the schedule, which
		// goes on at its planned times: a late outage must not push the
		// faults after it (the apiserver outage) off their quiet window.
		at := afterOutageAt(*rec, t0)
		in.watchers.Go(func() {
			if sleepUntil(ctx, at) == nil {
				in.afterOutage = in.place(ctx) // read after run, which waits for watchers
			}
		})
		return err
	case FaultKubeOutage:
		rec.Target = svcKubeAPIServer
		// The victims, made as soon as the apiserver is gone, so the
		// first try of their events starts the retry budget with the outage.
		return in.outageThen(ctx, rec, cleanStop, []string{svcKubeAPIServer}, func(ctx context.Context) error {
			note, err := in.drv.kubeVictims(ctx)
			rec.Note = note
			return err
		})
	case FaultAPIOutage:
		return in.apiOutage(ctx, rec)
	case FaultFreeze:
		return in.freeze(ctx, rec)
	case FaultRunnerKill:
		return in.killRunner(ctx, rec)
	case FaultNodeFreeze:
		return in.nodeFreeze(ctx, rec)
	case FaultOverLimit:
		return in.overLimit(ctx, rec)
	case FaultWatchCut:
		rec.Target = svcMemapi
		n, err := endWatches(ctx, in.sys.faultsURL)
		rec.Note = fmt.Sprintf("%d watch streams ended", n)
		rec.Restored = time.Now()
		return err
	case FaultOversize:
		id, err := in.drv.createOversize(ctx)
		if err != nil {
			return err
		}
		rec.Target = id
		if err := sleepUntil(ctx, t0.Add(rec.At+rec.Down)); err != nil {
			return err
		}
		err = in.drv.stopSession(ctx, id)
		rec.Restored = time.Now()
		rec.Note = fmt.Sprintf("%d KiB of annotations; created, stopped %s later", oversizeBytes>>10, rec.Down)
		return err
	}
	return fmt.Errorf("unknown fault %q", rec.Kind)
}

// takeoverMargin ends the wait for the peer's writes before the restart
// of the dead replica, so that the restarted process cannot have made them.
const takeoverMargin = 500 * time.Millisecond

// awaitCarried waits until each session of written (session id: the
// status.sdkSessionId the operator wrote on its AgenticSession) has that
// value in the API, or until deadline. It returns the sessions that did
// not (sorted), and how long the last of the others took.
func (in *injector) awaitCarried(ctx context.Context, written map[string]string, deadline time.Time) ([]string, time.Duration) {
	start := time.Now()
	pending := maps.Clone(written)
	var took time.Duration
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		for id, want := range pending {
			if s, err := in.drv.api.GetSession(ctx, id); err == nil && s.GetSdkSessionId() == want {
				delete(pending, id)
				took = time.Since(start)
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return slices.Sorted(maps.Keys(pending)), took
}

// killsReconciler reports whether f is a kill of a kube-reconciler replica.
func (f faultRecord) killsReconciler() bool {
	return f.Kind == FaultKill && isKubeReconciler(f.Target)
}

// downsReconciler reports whether f kills or freezes a kube-reconciler
// replica: the operator writes statuses in its partitions meanwhile.
func (f faultRecord) downsReconciler() bool {
	return (f.Kind == FaultKill || f.Kind == FaultFreeze) && isKubeReconciler(f.Target)
}

// isKubeReconciler reports whether instance is a kube-reconciler replica.
func isKubeReconciler(instance string) bool {
	return strings.HasPrefix(instance, svcKubeReconciler)
}

// takeDown ends a held member's process.
type takeDown func(ctx context.Context, p *proc.Process) error

// kill9 is kill -9 of the member's process group.
func kill9(ctx context.Context, p *proc.Process) error { return p.Kill(ctx) }

// cleanStop is SIGTERM, then SIGKILL after stopGrace.
func cleanStop(ctx context.Context, p *proc.Process) error { return p.Stop(ctx, stopGrace) }

// outage takes the named members down (how: kill -9 or a clean stop), keeps
// them down for rec.Down, starts them again and waits until they are ready.
func (in *injector) outage(ctx context.Context, rec *faultRecord, how takeDown, names []string) error {
	return in.outageThen(ctx, rec, how, names, nil)
}

// outageThen is outage with whileDown called once every target is down.
// rec.Down counts from that moment: a clean stop can take its whole grace
// period, and the outage must last Down all the same.
func (in *injector) outageThen(ctx context.Context, rec *faultRecord, how takeDown, names []string, whileDown func(context.Context) error) error {
	ms := make([]*member, 0, len(names))
	for _, n := range names {
		m, ok := in.sys.byName[n]
		if !ok {
			return fmt.Errorf("no member %s", n)
		}
		ms = append(ms, m)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ms))
	for i, m := range ms {
		m.proc.Hold()
		wg.Go(func() { errs[i] = how(ctx, m.proc) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rec.Down0 = time.Now()
	var downErr error
	if whileDown != nil {
		downErr = whileDown(ctx)
	}
	if err := sleepUntil(ctx, rec.Down0.Add(rec.Down)); err != nil {
		return errors.Join(downErr, err)
	}
	for _, m := range ms {
		m.proc.Release()
	}
	deadline := time.Now().Add(readyTimeout)
	for _, m := range ms {
		if err := proc.WaitReady(ctx, m.probe, deadline); err != nil {
			return fmt.Errorf("%s not ready after the fault: %w", m.name, err)
		}
	}
	rec.Restored = time.Now()
	return downErr
}

// afterOutageAt is when the NATS outage's after-snapshot is taken: its
// whole settle time after NATS answered again (rec.Restored), and not
// before the plan's end of the fault. The plan's end alone is not enough:
// a fault that starts late (a runner kill that waited for a runner to
// pick, a slow readiness after a long node loss) shifts the outage, not
// its planned end: a run with a node loss of 3m and an outage of 4m took
// the snapshot 6.7 s after NATS was back, another (3m, 3m) right as it
// came back, before MEMBER_TTL and a sweep (10 s) had passed, so a
// session the outage was about to move still counted as left alone.
// rec.Restored is zero when the outage failed: the plan's end.
func afterOutageAt(rec faultRecord, t0 time.Time) time.Time {
	planned := t0.Add(rec.At + rec.Down + rec.Settle)
	if rec.Restored.IsZero() {
		return planned
	}
	return later(planned, rec.Restored.Add(rec.Settle))
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// place records where runners are now. KV may be unreadable (it is right
// after an outage); the process table is the record that counts.
func (in *injector) place(ctx context.Context) placement {
	runners, at := in.smp.Latest()
	p := placement{At: at, Runners: runners}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if owners, err := in.nv.runnerRecords(rctx); err == nil {
		p.Owners = owners
	}
	return p
}

// oversizeStopLimit bounds the wait for the oversize session's stop.
const oversizeStopLimit = 3 * time.Minute

// timeStop measures how long the stop of session id, asked at asked, took
// to take effect, into record i.
func (in *injector) timeStop(ctx context.Context, i int, id string, asked time.Time) {
	took := time.Duration(-1)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for time.Since(asked) < oversizeStopLimit {
		s, err := in.drv.api.GetSession(ctx, id)
		runners, _ := in.smp.Latest()
		if err == nil && s.GetPhase() == phaseStopped && len(runners[id]) == 0 {
			took = time.Since(asked)
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	in.mu.Lock()
	in.records[i].Took = took
	in.mu.Unlock()
}

func (in *injector) faults() []faultRecord {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]faultRecord(nil), in.records...)
}

// apiOutage makes the API refuse every call for rec.Down (memapi keeps its
// state in memory, so it is not stopped: it refuses calls as a restarting
// server would), then waits until it answers its readiness probe again.
// memapi ends the outage on its own timer, so a harness that dies during
// it leaves no API down.
func (in *injector) apiOutage(ctx context.Context, rec *faultRecord) error {
	rec.Target = svcMemapi
	m, ok := in.sys.byName[svcMemapi]
	if !ok {
		return fmt.Errorf("no member %s", svcMemapi)
	}
	n, err := startAPIOutage(ctx, in.sys.faultsURL, rec.Down)
	if err != nil {
		return err
	}
	rec.Down0 = time.Now()
	rec.Note = fmt.Sprintf("%d watch streams ended; every connection closed and new ones refused (a restart), the driver's changes then refused", n)
	if err := sleepUntil(ctx, rec.Down0.Add(rec.Down)); err != nil {
		return err
	}
	if err := proc.WaitReady(ctx, m.probe, time.Now().Add(readyTimeout)); err != nil {
		return fmt.Errorf("%s not ready after the outage: %w", svcMemapi, err)
	}
	rec.Restored = time.Now()
	return nil
}

// startAPIOutage asks memapi to refuse every call for d; it returns the
// number of watch streams that ended.
func startAPIOutage(ctx context.Context, base string, d time.Duration) (int, error) {
	return postFault(ctx, base+"/faults/outage?for="+url.QueryEscape(d.String()))
}

// endWatches asks memapi to end every watch stream.
func endWatches(ctx context.Context, base string) (int, error) {
	return postFault(ctx, base+"/faults/end-watches")
}

// postFault POSTs to one of memapi's fault endpoints and returns the
// number of watch streams the fault ended.
func postFault(ctx context.Context, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return 0, fmt.Errorf("build fault request %s: %w", u, err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST %s: %w", u, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read below
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST %s: %s", u, resp.Status)
	}
	var body struct {
		Ended int `json:"ended"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("POST %s: decode answer: %w", u, err)
	}
	return body.Ended, nil
}

// sleepUntil waits until t or ctx is done.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// since renders the time since t0 as whole seconds, for progress lines.
func since(t0 time.Time) string { return time.Since(t0).Truncate(time.Second).String() }
