package chaos

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// FaultKind names one kind of fault.
type FaultKind string

// The faults of issue 14, in the order a plan runs them.
const (
	FaultOversize FaultKind = "oversize object"
	FaultKill     FaultKind = "kill -9"
	FaultWatchCut FaultKind = "API watch streams cut"
	FaultNodeLoss FaultKind = "NATS node lost"
	// FaultNodeStoreLoss (the full run only) is a NATS node that comes
	// back with an empty store: kill -9 of the events stream's leader, its
	// store directory emptied while it is down, restarted after Down under
	// the same server name and routes (in Kubernetes: the pod rescheduled
	// onto a new PersistentVolume). Every stream and bucket is R3, so it
	// must catch up on all of them, and on the replicated consumers it was a
	// replica of, from its peers within Settle, and the
	// system must lose and double nothing meanwhile.
	FaultNodeStoreLoss FaultKind = "NATS node lost with its store"
	FaultNATSOutage    FaultKind = "NATS outage"
	FaultAPIOutage     FaultKind = "API outage"
	FaultKubeOutage    FaultKind = "kube-apiserver outage"
	// FaultFreeze is SIGSTOP of a member's process group, SIGCONT after
	// Down: a VM pause or a long GC or I/O stall. It outlasts the lease and
	// MEMBER_TTL, so the member resumes after its peer took its lease or
	// partitions over, believing it still holds them.
	FaultFreeze FaultKind = "process frozen"
	// FaultRunnerKill is kill -9 of one running session's runner process
	// (not of its runner-manager).
	FaultRunnerKill FaultKind = "runner killed"
	// FaultNodeFreeze is a whole node frozen (a VM pause): a
	// runner-manager's process group and the process group of every
	// runner of it stopped together (SIGSTOP) past MEMBER_TTL, then all
	// resumed together (SIGCONT). Its peer takes the claims over and
	// restarts the sessions meanwhile; on the thaw the old runners resume
	// beside the new ones until their replica learns the claims are gone.
	FaultNodeFreeze FaultKind = "node frozen"
	// FaultOverLimit (the full run only) is two sessions each alone over
	// the event payload limit (NATS max_payload), so the informer publishes
	// reference events without their state, flags them with the condition
	// EventsPublished=False ObjectTooLarge, and consumers dead-letter their
	// events: a local one, made smaller again after Down, which must then
	// converge like any session, and a kube one left over the limit to the
	// end, which must never get an AgenticSession. It runs beside the
	// faults after it (Fault.Beside): Down spans the informers' kills and
	// the freeze of their leader, so new leaders meet the sessions over the
	// limit.
	FaultOverLimit FaultKind = "session over the payload limit"
)

// Fault is one planned fault.
type Fault struct {
	Kind FaultKind
	// Target is the killed or frozen service instance (FaultKill,
	// FaultFreeze), the runner-manager replica whose runner is killed
	// (FaultRunnerKill) or whose node is frozen (FaultNodeFreeze); empty
	// otherwise (the lost NATS node is chosen when
	// the fault starts: the leader of the events stream). A freeze of
	// svcInformer freezes the informer that holds the lease when it starts.
	Target string
	// At is the start, from the start of the plan.
	At time.Duration
	// Down is how long the target stays down (an oversize object: how long
	// it runs before it is stopped).
	Down time.Duration
	// Settle is the quiet time after Down before the next fault.
	Settle time.Duration
	// Takeover marks a kill of a kube-reconciler kept down past MEMBER_TTL
	// (PlanConfig.TakeoverDown): its peer takes its partitions over, as when
	// a Deployment's pod is replaced by one of another name, instead of the
	// restarted process taking them back under the same name. A freeze of a
	// kube-reconciler is always one (PlanConfig.Freeze is past MEMBER_TTL),
	// but the frozen process resumes under its name.
	Takeover bool
	// Beside marks a fault that goes on beside the faults after it: the
	// next one starts after Settle, while this one lasts Down
	// (FaultOverLimit: sessions kept over the limit through the kills).
	Beside bool
}

// End is when the next fault may start: the fault and its settle time
// over, or, for a fault beside the next ones, its settle time.
func (f Fault) End() time.Duration {
	if f.Beside {
		return f.At + f.Settle
	}
	return f.At + f.Down + f.Settle
}

// Over is when the fault is over (its Down past), beside the next ones or
// not.
func (f Fault) Over() time.Duration { return f.At + f.Down }

// Op is one kind of API change.
type Op string

// The changes the driver makes.
const (
	OpCreate   Op = "create"
	OpUpdate   Op = "update"
	OpStop     Op = "stop"
	OpStart    Op = "start"
	OpDelete   Op = "delete"
	OpSettings Op = "settings"
)

// opWeights is the mix of changes: creates outrun deletes a little so the
// population grows, and every kind is frequent enough to meet every fault.
var opWeights = []struct {
	op     Op
	weight int
}{
	{OpCreate, 25}, {OpUpdate, 25}, {OpStop, 12}, {OpStart, 10}, {OpDelete, 18}, {OpSettings, 10},
}

// Change is one planned API change.
type Change struct {
	At time.Duration
	Op Op
}

// Plan is the schedule of a run: the faults one after the other, and the
// changes spread evenly from the start to the end of the last fault, but
// for the Quiet window.
type Plan struct {
	Faults  []Fault
	Changes []Change
	// Quiet is a span without changes (around the apiserver outage's start).
	Quiet Window
	// End is when the last fault ended: the changes stop, and the time to
	// converge is counted from here.
	End time.Duration
}

// PlanConfig shapes a Plan.
type PlanConfig struct {
	Changes int
	// Kills are the service instances killed, in order; the first half
	// before the watch cut, the rest after it.
	Kills        []string
	Warmup       time.Duration
	RestartDelay time.Duration
	// TakeoverDown, when not 0, is how long the last kube-reconciler kill
	// keeps it down (Fault.Takeover); the others come back after
	// RestartDelay.
	TakeoverDown time.Duration
	KillSettle   time.Duration
	NodeLoss     time.Duration
	// NodeStoreLoss, when not 0, adds a NATS node that comes back with an
	// empty store (FaultNodeStoreLoss) after the node loss, down this long.
	NodeStoreLoss time.Duration
	NATSOutage    time.Duration
	// APIOutage is how long the ambient API refuses every call (memapi's
	// POST /faults/outage).
	APIOutage  time.Duration
	KubeOutage time.Duration
	// Freezes are the members frozen (FaultFreeze), in order, for Freeze
	// each, after the kills; RunnerKills the runner-manager replicas one
	// runner of which is killed (FaultRunnerKill), after the freezes.
	Freezes     []string
	Freeze      time.Duration
	RunnerKills []string
	// NodeFreezes are the runner-manager replicas whose node is frozen
	// (FaultNodeFreeze), in order, for NodeFreeze each, after the runner
	// kills (which need runners on every replica: a node freeze moves all
	// of its replica's sessions to the peer).
	NodeFreezes []string
	NodeFreeze  time.Duration
	// OverLimit adds the sessions over the payload limit (FaultOverLimit)
	// after the oversize object, kept over the limit until every kill and
	// freeze of an informer has settled.
	OverLimit bool
}

// Settle times after the faults whose length PlanConfig does not give.
const (
	// oversizeRun is how long the oversize session runs before its stop.
	oversizeRun    = 30 * time.Second
	oversizeSettle = 10 * time.Second
	watchCutSettle = 10 * time.Second
	// nodeLossSettle and natsOutageSettle let the group and claim sweeps
	// (MEMBER_TTL 5s + a 5s sweep) finish before the next fault, so the
	// after-outage snapshot shows where runners ended up.
	nodeLossSettle   = 20 * time.Second
	natsOutageSettle = 30 * time.Second
	// nodeStoreLossSettle is how long the node that lost its store has,
	// from answering its readiness probe, to be a current replica (lag 0)
	// of every stream and bucket again: catching up on a few thousand
	// small messages per stream from two peers takes seconds; the rest is
	// a loaded host's margin, and the group and claim sweeps' time
	// (nodeLossSettle) before the NATS outage.
	nodeStoreLossSettle = 30 * time.Second
	// apiOutageSettle lets the informers' watches come back after the API
	// outage, whatever their reconnect backoff reached meanwhile (at most
	// WATCH_BACKOFF_MAX, 30s), and the retried writes land, before the
	// apiserver outage starts.
	apiOutageSettle = 45 * time.Second
	// freezeSettle follows a thaw: the thawed member has answered its
	// readiness probe by then (the wait is part of it); what it does on
	// resuming overlaps the next fault on purpose, as the kills' restarts
	// do not (a thaw is no restart: nothing is started again).
	freezeSettle = 4 * time.Second
	// runnerKillSettle covers the wait for the killed runner's session to
	// end (runner-manager sees the exit at once) and a moment after it.
	runnerKillSettle = 6 * time.Second
	// overLimitSettle is how long the next fault waits after the
	// over-limit sessions were made, so the informer flags them before the
	// first kill, which may hit its leader: the leader change then meets
	// sessions already flagged.
	overLimitSettle = 10 * time.Second
	// overLimitMinDown is the shortest time the sessions stay over the
	// limit: past a runner-manager resync (RUNNER_RESYNC_INTERVAL, 1m),
	// the one path that reads them from the API, not from events.
	overLimitMinDown = 75 * time.Second
	// nodeFreezeSettle follows a node's thaw: the harness watches the old
	// runners and the moved sessions' writes for thawWatch after the thaw
	// (part of the fault), and the next fault (a NATS node killed) must
	// not meet the thawed replica before it learnt its claims are gone.
	nodeFreezeSettle = thawWatch + 2*time.Second
)

// NewPlan builds the schedule. rng picks the kind of each change; the
// object it applies to is picked when it runs, from the state then.
func NewPlan(c PlanConfig, rng *rand.Rand) Plan {
	var p Plan
	at := c.Warmup
	add := func(f Fault) {
		f.At = at
		p.Faults = append(p.Faults, f)
		at = f.End()
	}
	takeover := -1
	for i, t := range c.Kills {
		if c.TakeoverDown > 0 && isKubeReconciler(t) {
			takeover = i
		}
	}
	kill := func(i int) {
		f := Fault{Kind: FaultKill, Target: c.Kills[i], Down: c.RestartDelay, Settle: c.KillSettle}
		if i == takeover {
			f.Down, f.Takeover = c.TakeoverDown, true
		}
		add(f)
	}
	add(Fault{Kind: FaultOversize, Down: oversizeRun, Settle: oversizeSettle})
	overLimit := -1
	if c.OverLimit {
		overLimit = len(p.Faults)
		add(Fault{Kind: FaultOverLimit, Down: overLimitMinDown, Settle: overLimitSettle, Beside: true})
	}
	half := (len(c.Kills) + 1) / 2
	for i := range half {
		kill(i)
	}
	add(Fault{Kind: FaultWatchCut, Settle: watchCutSettle})
	for i := half; i < len(c.Kills); i++ {
		kill(i)
	}
	for _, t := range c.Freezes {
		add(Fault{Kind: FaultFreeze, Target: t, Down: c.Freeze, Settle: freezeSettle, Takeover: isKubeReconciler(t)})
	}
	if overLimit >= 0 {
		// Over the limit until the last kill or freeze of an informer has
		// settled: the kill of the leader starts a new term (the restarted
		// process may take the lease back under its name), and the freeze
		// of the leader moves the lease to the other informer (the freeze
		// check wants it moved), so new leaders meet the sessions over the
		// limit.
		f := &p.Faults[overLimit]
		f.Down = max(f.Down, informerFaultsOver(p.Faults)-f.At)
	}
	for _, t := range c.RunnerKills {
		add(Fault{Kind: FaultRunnerKill, Target: t, Settle: runnerKillSettle})
	}
	for _, t := range c.NodeFreezes {
		add(Fault{Kind: FaultNodeFreeze, Target: t, Down: c.NodeFreeze, Settle: nodeFreezeSettle})
	}
	add(Fault{Kind: FaultNodeLoss, Down: c.NodeLoss, Settle: nodeLossSettle})
	if c.NodeStoreLoss > 0 {
		// After the node loss, whose store survived: the harder case
		// follows the easier one, and both come before the outage of every
		// node, whose after-snapshot wants the cluster whole.
		add(Fault{Kind: FaultNodeStoreLoss, Down: c.NodeStoreLoss, Settle: nodeStoreLossSettle})
	}
	add(Fault{Kind: FaultNATSOutage, Down: c.NATSOutage, Settle: natsOutageSettle})
	add(Fault{Kind: FaultAPIOutage, Down: c.APIOutage, Settle: apiOutageSettle})
	// Last: nothing settles after it but the convergence wait.
	add(Fault{Kind: FaultKubeOutage, Down: c.KubeOutage})
	p.End = at
	for _, f := range p.Faults {
		p.End = max(p.End, f.Over())
	}
	// No change around the start of the apiserver outage: the events of
	// the outage's victims (a delete, a group_access rewrite) must be first
	// in kube-reconciler's queues, where a consumer group dead-letters after
	// its retry budget; behind another failing event they would only wait.
	// The window covers the apiserver's graceful stop (stopGrace at most).
	p.Quiet = Window{From: last(p.Faults).At - kubeQuietBefore, To: last(p.Faults).At + stopGrace + kubeQuietAfter}

	total := 0
	for _, w := range opWeights {
		total += w.weight
	}
	p.Changes = make([]Change, c.Changes)
	for i := range p.Changes {
		n := rng.IntN(total)
		op := opWeights[0].op
		for _, w := range opWeights {
			if n < w.weight {
				op = w.op
				break
			}
			n -= w.weight
		}
		p.Changes[i] = Change{At: p.Quiet.skip((p.End - p.Quiet.length()) * time.Duration(i) / time.Duration(c.Changes)), Op: op}
	}
	return p
}

func last(fs []Fault) Fault { return fs[len(fs)-1] }

// informerFaultsOver is when the last kill or freeze of an informer in fs
// has settled (0: none).
func informerFaultsOver(fs []Fault) time.Duration {
	var end time.Duration
	for _, f := range fs {
		if (f.Kind == FaultKill || f.Kind == FaultFreeze) && strings.HasPrefix(f.Target, svcInformer) {
			end = max(end, f.End())
		}
	}
	return end
}

// Quiet time around the start of the apiserver outage.
const (
	kubeQuietBefore = 15 * time.Second
	kubeQuietAfter  = 5 * time.Second
)

// Window is a span of the plan, [From, To).
type Window struct{ From, To time.Duration }

func (w Window) length() time.Duration { return max(0, w.To-w.From) }

// skip maps an offset on a timeline without the window onto the plan's.
func (w Window) skip(d time.Duration) time.Duration {
	if d < w.From {
		return d
	}
	return d + w.length()
}

// Kills lists the service instances a run kills: every replica of every
// killable service, or (short) replica 0 of each. event-tally is not
// killed: its tally lives in memory by design, so a restart would make the
// "every change counted" check meaningless rather than find a loss.
func Kills(short bool) []string {
	services := []string{svcInformer, svcKubeReconciler, svcRunnerManager, svcAGUIProxy}
	var out []string
	replicas := serviceReplicas
	if short {
		replicas = 1
	}
	for r := range replicas {
		for _, s := range services {
			out = append(out, instanceName(s, r))
		}
	}
	return out
}

// Freezes lists the members a run freezes: the informer that leads when
// the freeze starts, and replica 1 of kube-reconciler and runner-manager
// (the kills of the short run hit replica 0).
func Freezes() []string {
	return []string{svcInformer, instanceName(svcKubeReconciler, 1), instanceName(svcRunnerManager, 1)}
}

// NodeFreezes lists the runner-manager replicas whose whole node a run
// freezes: replica 1 in the full run, none in the short one (CI), where
// its minute and its thaw race are not worth the time.
func NodeFreezes(short bool) []string {
	if short {
		return nil
	}
	return []string{instanceName(svcRunnerManager, 1)}
}

// RunnerKills lists the runner-manager replicas one of whose runners a run
// kills: each replica, or (short) replica 0.
func RunnerKills(short bool) []string {
	replicas := serviceReplicas
	if short {
		replicas = 1
	}
	out := make([]string, 0, replicas)
	for r := range replicas {
		out = append(out, instanceName(svcRunnerManager, r))
	}
	return out
}

// NodeStoreLoss is how long the NATS node whose store is lost stays down
// in a run of cfg: --node-store-loss in the full run, 0 (none) in the
// short one (CI), whose schedule stays as it was.
func NodeStoreLoss(cfg Config) time.Duration {
	if cfg.Short {
		return 0
	}
	return cfg.NodeStoreLoss
}

// OverLimit reports whether a run has the sessions over the payload limit
// (FaultOverLimit): the full run only; CI's short run keeps its schedule.
func OverLimit(short bool) bool { return !short }

func instanceName(service string, replica int) string { return fmt.Sprintf("%s-%d", service, replica) }
