package chaos

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
)

// maxFailureLines bounds the lines the report lists per check.
const maxFailureLines = 40

// report renders a run as Markdown (docs/reliability.md).
type report struct {
	cfg     Config
	plan    Plan
	begun   time.Time // the harness started the system
	t0      time.Time // the schedule started
	end     time.Time // the last fault was over
	in      auditInput
	res     auditResult
	runDir  string
	cpus    int
	signals []signalCount
	// loadStart and loadEnd are /proc/loadavg at the start and the end: the
	// host is shared, and timings mean little without them.
	loadStart, loadEnd string
}

func (r report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	verdict := "PASSED"
	if !r.res.Passed() {
		verdict = "FAILED"
	}
	w("# Reliability: the chaos suite\n\n")
	w("`make chaos` runs the whole control plane as processes on one host and breaks it on a schedule while it drives API changes; then it audits the result from outside (issue 14). This file is the report of one run, written by the harness (`services/devstack/cmd/chaos`, `--report`); run it again to refresh it. `make chaos-short` is the CI-sized variant.\n\n")
	w("## Result: %s\n\n", verdict)
	w("```\n%s\n```\n\n", r.res.Line(r.in.Converged))
	w("| run | |\n|---|---|\n")
	w("| started | %s |\n", r.begun.UTC().Format(time.RFC3339))
	if r.cfg.Commit != "" {
		w("| code | `%s` |\n", r.cfg.Commit)
	}
	variant := "full"
	if r.cfg.Short {
		variant = "short (`make chaos-short`)"
	}
	w("| variant | %s |\n", variant)
	w("| seed | %d (`--seed %d` replays the same schedule and choices) |\n", r.cfg.Seed, r.cfg.Seed)
	w("| changes | %d planned over %s |\n", r.cfg.Changes, r.plan.End.Round(time.Second))
	w("| host | %d CPUs; load average %s at the start, %s at the end |\n", r.cpus, r.loadStart, r.loadEnd)
	w("| system start | %s |\n", r.t0.Sub(r.begun).Round(time.Second))
	w("| schedule | %s |\n\n", r.end.Sub(r.t0).Round(time.Second))

	w("## Checks\n\n| check | result | detail |\n|---|---|---|\n")
	for _, c := range r.res.Checks {
		mark := "pass"
		if !c.OK {
			mark = "**FAIL**"
		}
		w("| %s | %s | %s |\n", c.Name, mark, c.Detail)
	}
	w("\n")

	w("## Findings of issue 14 this run shows\n\n")
	for _, f := range r.findings() {
		w("- %s\n", f)
	}
	w("\n")

	w("## Fault schedule\n\nTimes are seconds from the start of the schedule; `back` is when the target answered its readiness probe again.\n\n")
	w("| # | at | fault | target | down | back | note |\n|---|---|---|---|---|---|---|\n")
	for i, f := range r.in.Faults {
		back := ""
		if !f.Restored.IsZero() {
			back = fmt.Sprintf("%.1f", f.Restored.Sub(r.t0).Seconds())
		}
		note := f.Note
		if f.Err != "" {
			note = strings.TrimSpace(note + " error: " + f.Err)
		}
		w("| %d | %.1f | %s | %s | %s | %s | %s |\n", i+1, f.Start.Sub(r.t0).Seconds(), f.Kind, f.Target, f.Down.Round(time.Second), back, mdEscape(note))
	}
	w("\n")

	r.figures(&b)

	w("## What failed\n\n")
	anyFailed := false
	for _, c := range r.res.Checks {
		if c.OK || len(c.Failures) == 0 {
			continue
		}
		anyFailed = true
		w("### %s\n\n", c.Name)
		for i, l := range c.Failures {
			if i == maxFailureLines {
				w("- ... and %d more\n", len(c.Failures)-maxFailureLines)
				break
			}
			w("- %s\n", mdEscape(l))
		}
		w("\n")
	}
	if !anyFailed {
		w("Nothing.\n\n")
	}
	r.setup(&b)
	return b.String()
}

// findings maps the findings to what this run saw.
func (r report) findings() []string {
	out := []string{r.findingOutage(), r.findingKube()}
	for _, f := range r.in.Faults {
		if f.Kind == FaultOversize {
			out = append(out, r.findingOversize(f))
		}
	}
	out = append(out, r.findingGrowth(), r.findingDLQ(), r.findingNodeLoss())
	for _, f := range r.in.Faults {
		if f.Kind == FaultNodeStoreLoss {
			out = append(out, r.findingStoreLoss(f))
		}
	}
	return append(out, r.findingOverwrite())
}

func yesNo(b bool) string {
	if b {
		return "**reproduced**"
	}
	return "not seen"
}

// failuresWith returns the failure lines of every check containing any of
// phrases.
func (r report) failuresWith(phrases ...string) []string {
	var out []string
	for _, c := range r.res.Checks {
		for _, l := range c.Failures {
			for _, p := range phrases {
				if strings.Contains(l, p) {
					out = append(out, l)
					break
				}
			}
		}
	}
	return out
}

// twiceAfter counts the sessions first seen twice after a fault of kind.
func (r report) twiceAfter(kind FaultKind) int {
	n := 0
	twice, _ := thawWindow(r.in.Sampler.Twice, r.in.Faults) // the thaw window is no session run twice
	for _, t := range bySession(twice) {
		if strings.Contains(lastFault(r.in.Faults, t.First), string(kind)) {
			n++
		}
	}
	return n
}

func (r report) stream(name string) *streamInfo {
	for i := range r.in.Streams {
		if r.in.Streams[i].Name == name {
			return &r.in.Streams[i]
		}
	}
	return nil
}

func (r report) findingOutage() string {
	m, after := r.res.Moved, r.twiceAfter(FaultNATSOutage)
	return fmt.Sprintf("1. A NATS outage longer than the TTLs moves sessions and runs some twice: %s (moved_by_outage=%d of %d sessions left alone across it; %d sessions twice after it, %d over the whole run).",
		yesNo(m.Total() > 0 || after > 0), m.Total(), m.Considered, after, r.res.Twice)
}

func (r report) findingNodeLoss() string {
	n := r.twiceAfter(FaultNodeLoss)
	return fmt.Sprintf("5b. Losing one NATS node (kill -9 of the events stream's leader), which the issue saw hold: %s (%d sessions twice after it).",
		map[bool]string{true: "**does not hold here**", false: "held"}[n > 0], n)
}

// findingStoreLoss: a NATS node back with an empty store (not in the
// issue; the harder sibling of 5b) held when the node caught up within its
// settle time and stayed current, and no session ran twice after it.
func (r report) findingStoreLoss(f faultRecord) string {
	n := r.twiceAfter(FaultNodeStoreLoss)
	caught := "never caught up"
	held := false
	if sl := f.StoreLoss; f.Err == "" && sl != nil && sl.CaughtUp >= 0 {
		caught = fmt.Sprintf("ready %s after its restart, a current replica of all %d streams and buckets and %d replicated consumers %s after that, %d behind at the end",
			sl.Ready.Round(100*time.Millisecond), len(sl.Streams), len(sl.Consumers), sl.CaughtUp.Round(100*time.Millisecond), len(sl.EndBehind))
		held = len(sl.EndBehind) == 0 && sl.LocalStreams >= len(sl.Streams)
	}
	return fmt.Sprintf("5c. A NATS node back with an empty store (kill -9 of %s, its store deleted while down: a pod on a new PersistentVolume): %s (%s; %d sessions twice after it).",
		f.Target, map[bool]string{true: "held", false: "**does not hold here**"}[held && n == 0], caught, n)
}

func (r report) findingKube() string {
	lost := r.failuresWith("still exists", "RoleBindings")
	stale := r.failuresWith("AgenticSession is stale", "no AgenticSession")
	return fmt.Sprintf("2. Kubernetes changes lost during a kube-apiserver outage longer than the retry budget (%s with GROUP_MAX_DELIVER=%d, outage %s): %s (%d deletes or RoleBinding sets not applied, %d AgenticSessions missing or stale).",
		RetryBudget(r.cfg.KubeMaxDeliver, group.DefaultBackoff), r.cfg.KubeMaxDeliver, r.cfg.KubeOutage, yesNo(len(lost)+len(stale) > 0), len(lost), len(stale))
}

func (r report) findingOversize(f faultRecord) string {
	took := "never (within " + oversizeStopLimit.String() + ")"
	if f.Took >= 0 {
		took = f.Took.Round(100 * time.Millisecond).String()
	}
	payload := 0
	for _, sc := range r.signals {
		if sc.Phrase == logSignals[0] {
			payload += sc.Lines
		}
	}
	verdict := yesNo(f.Took < 0 || f.Took > oversizeStopBound)
	if verdict != yesNo(true) && payload > 0 {
		verdict = "**partly reproduced**: its events were never published, but the stop arrived another way"
	}
	return fmt.Sprintf("3. An oversize object (%d KiB of annotations) blocks its own stop: %s (the stop took effect after %s; %d log lines `maximum payload exceeded`).",
		oversizeBytes>>10, verdict, took, payload)
}

func (r report) findingGrowth() string {
	objects, runners := r.stream("KV_ambient-objects"), r.stream("KV_ambient-runners")
	if objects == nil || runners == nil {
		return "4. KV growth: the buckets could not be read."
	}
	live := 0
	for _, s := range r.in.Sessions {
		if !s.Deleted {
			live++
		}
	}
	return fmt.Sprintf("4. KV buckets grow with every deleted session: %d messages in ambient-objects and %d in ambient-runners for %d live sessions and %d projects (a figure; the growth test is 4,000 create+delete cycles).",
		objects.Msgs, runners.Msgs, live, len(r.in.Projects))
}

func (r report) findingDLQ() string {
	dlq := r.stream("AMBIENT_DLQ")
	if dlq == nil {
		return "5. The dead-letter stream's replicas: AMBIENT_DLQ was not created in this run."
	}
	return fmt.Sprintf("5. The dead-letter stream at fewer replicas than the events stream: %s (AMBIENT_DLQ at R%d, %d dead letters).", yesNo(dlq.Replicas != natsReplicas), dlq.Replicas, dlq.Msgs)
}

func (r report) findingOverwrite() string {
	n := len(r.failuresWith(`stopped, phase "Running"`))
	return fmt.Sprintf("6. (review) A user's stop overwritten by the control plane's own Running write: %s (%d stopped sessions Running with a live runner at the end).", yesNo(n > 0), n)
}

func (r report) figures(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Figures\n\n")
	type tally struct{ ok, refused, outage, failed, fallback int }
	byOp := map[Op]*tally{}
	for _, c := range r.in.Journal {
		t, ok := byOp[c.Op]
		if !ok {
			t = &tally{}
			byOp[c.Op] = t
		}
		switch c.Result {
		case resultOK:
			t.ok++
		case resultRefused:
			t.refused++
		case resultUnavailable:
			t.outage++
		default:
			t.failed++
		}
		if c.Planned != "" {
			t.fallback++
		}
	}
	w("Changes made through the API (gRPC; start and stop through REST). A planned change that had no candidate became another kind (`instead of`).\n\n")
	w("| change | made | refused | API down | failed | instead of another kind |\n|---|---|---|---|---|---|\n")
	for _, op := range []Op{OpCreate, OpUpdate, OpStop, OpStart, OpDelete, OpSettings} {
		t := byOp[op]
		if t == nil {
			t = &tally{}
		}
		w("| %s | %d | %d | %d | %d | %d |\n", op, t.ok, t.refused, t.outage, t.failed, t.fallback)
	}
	w("\nStatus writes on AgenticSessions by the harness' operator (`status.sdkSessionId`, through the Kubernetes API): %d made (%d of them while a kube-reconciler replica was dead, %d in its partitions), %d failed, %d skipped (no AgenticSession yet).\n",
		r.in.Operator.Writes, len(r.in.Operator.Down), len(r.in.Operator.DownDead), r.in.Operator.Failed, r.in.Operator.Skipped)
	var local, localRunning, kube, deleted int
	for _, s := range r.in.Sessions {
		switch {
		case s.Deleted:
			deleted++
		case s.Project.Local:
			local++
			if s.Running {
				localRunning++
			}
		default:
			kube++
		}
	}
	w("\nSessions at the end: %d created, %d deleted, %d local (%d wanted running), %d on Kubernetes.\n\n", len(r.in.Sessions), deleted, local, localRunning, kube)
	w("Process table: %d samples every %s, the slowest scan %s.\n\n", r.in.Sampler.Samples, r.cfg.SampleInterval, r.in.Sampler.Slowest.Round(time.Millisecond))
	if t := trendText(r.in.Trend); t != "" {
		w("Objects not yet in their desired state (or uncounted) after the last fault, every look (falling: late; flat: lost): %s.\n\n", t)
	}
	if len(r.in.Streams) > 0 {
		w("| stream | replicas | messages |\n|---|---|---|\n")
		for _, s := range r.in.Streams {
			w("| %s | %d | %d |\n", s.Name, s.Replicas, s.Msgs)
		}
		w("\n")
	}
	exits := map[string]int{}
	for _, e := range r.in.Exits {
		if e.Planned {
			exits[e.Member]++
		}
	}
	if len(r.signals) > 0 {
		w("Log lines that point at a finding (hints; the checks above judge):\n\n| phrase | process | lines |\n|---|---|---|\n")
		for _, sc := range r.signals {
			w("| %s | %s | %d |\n", sc.Phrase, sc.Process, sc.Lines)
		}
		w("\n")
	}
	names := sortedKeys(exits)
	sort.Strings(names)
	if len(names) > 0 {
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %d", n, exits[n]))
		}
		w("Processes taken down by faults: %s.\n\n", strings.Join(parts, ", "))
	}
}

func (r report) setup(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## The system under test\n\n")
	w("- NATS: %d `nats-server` processes clustered on loopback (JetStream, file store, default `max_payload` 1 MiB); the informer creates its stream and buckets with `STREAM_REPLICAS=3`, runner-manager its buckets with `BUCKET_REPLICAS=3`, as the chart's bundled NATS runs them.\n", natsReplicas)
	w("- Kubernetes: `etcd` and `kube-apiserver` (bin/k8s) as processes, the chart's CRD and project ClusterRoles installed; kube-reconciler authenticates as a user bound to exactly the chart's ClusterRole. No operator runs; the harness writes `status.sdkSessionId` of a random AgenticSession now and then (spread over the schedule up to the quiet window before the apiserver outage), and of six more while each killed kube-reconciler replica is down, first those in its partitions (read from the group's mapping; their sessions are left alone by the schedule and by the later status writes from then on), as an operator would, and the audit checks that every kube session carries its CR's uid, namespace and that status. Kube sessions get no phase.\n")
	w("- The in-memory API (`memapi`, fault injection on); %d informers (`KV_AUDIT_INTERVAL=%s`), %d kube-reconcilers (`KUBE_SESSION_SELECTOR=projects=<the kube projects>`, `GROUP_MAX_DELIVER=%d`, `RESYNC_INTERVAL=%s`), %d runner-managers (`RUNNER_PROJECTS=<the local projects>`, the demo runner), %d agui-proxies, 1 event-tally; every other setting at its default.\n",
		serviceReplicas, r.cfg.InformerAudit, serviceReplicas, r.cfg.KubeMaxDeliver, r.cfg.KubeResync, serviceReplicas, serviceReplicas)
	w("%s", r.storeLossText())
	w("- Projects: two run their sessions as local runners, two as AgenticSessions; at most %d sessions want a local runner at once.\n", r.cfg.LocalCap)
	w("- Killed services come back after %s (a pod restart, under the same member name, so a group member takes its own partitions back).", r.cfg.RestartDelay)
	if r.cfg.TakeoverDown > 0 {
		w(" The last kube-reconciler killed comes back after %s instead, past `MEMBER_TTL`: its peer takes its partitions over, as when a Deployment replaces a pod by one of another name, and must carry the statuses written in them meanwhile to the API before the restart.", r.cfg.TakeoverDown)
	}
	w(" event-tally is never killed: its tally lives in memory by design, so killing it would void the counting check rather than test anything.\n")
	w("%s", r.overLimitText())
	w("- Frozen members (SIGSTOP of the process group, SIGCONT %s later: a VM pause, a long GC or I/O stall) resume where they stopped, after a peer took their lease or partitions over: the informer holding the lease, kube-reconciler-1 (the harness writes AgenticSession statuses in its partitions meanwhile, which its peer must carry before the thaw), runner-manager-1 (its runners, in their own process groups, run on).%s Killed runners (kill -9 of a running session's runner process, not of its runner-manager) must leave their session `Failed` with RunnerStarted `ProcessExited: killed by signal killed`, its record released and no route, and never be started again (services/runner-manager/README.md, Lifecycle).\n\n", r.cfg.Freeze, r.nodeFreezeText())
	w("How the audit reads the system: the API (gRPC list), the process table (`/proc`: a runner of this run is a `demo-runner` whose `WORKSPACE_PATH` lies under the run's workspace root; the replica is the root it runs in; a stopped runner, state `T` or `t` in `/proc/<pid>/stat`, serves nothing and is not live), KV `ambient-runners`, the Kubernetes API, event-tally's `/tally?ids=true`, `GET /sessions/{id}/health` through each agui-proxy, the whole events stream `AMBIENT_EVENTS`, and KV `ambient-objects` (the informer's persisted cache), compared object by object with the last event in the stream: the same state and `event_seq`, no entry after a DELETED; a replayed dead letter is no last event, objects whose last event is a reference event (over the payload limit) or whose events aged out are exempt, and the bucket is read again while it disagrees, for up to 30 s (KV writes follow the acks without waiting).\n\n")
	w("Reproduce: `make chaos` (or `make chaos-short`; `CHAOS_ARGS=\"--seed %d\"` replays this schedule). `bin/chaos -h` lists every knob.\n", r.cfg.Seed)
}

// overLimitText describes the sessions over the payload limit of the run,
// if it had them (the full run).
func (r report) overLimitText() string {
	for _, f := range r.plan.Faults {
		if f.Kind != FaultOverLimit {
			continue
		}
		return fmt.Sprintf("- Sessions over the event payload limit (the full run): two sessions with %d KiB of annotations each, over NATS `max_payload` alone, created through the API like every session, one in a local project and one in a kube project, %s into the schedule, kept over the limit through the kills of both informers and the freeze of their leader, so new leaders (a new term, under another name or the same) meet them. "+
			"The informer publishes only reference events of them (no state), which every consumer dead-letters, and flags them with the condition `EventsPublished=False`, reason `ObjectTooLarge` (within %s); neither may get an AgenticSession, a runner or a runner record while over the limit (runner-manager's resync, which reads sessions from the API, leaves a session with that condition alone, so the two modes agree). "+
			"After %s the local one is made smaller (%d KiB) through the API's update: its next event must be a complete MODIFIED, never a second ADDED, the condition must go within %s and the session run within %s. The kube one stays over the limit to the end: the objects bucket check counts it as exempt (its last event is a reference event), event-tally never counts it, and the audit wants it flagged, without an AgenticSession, a runner or a runner record.\n",
			overLimitBytes>>10, f.At, overLimitFlagBound, f.Down.Round(time.Second), overLimitShrunk>>10, overLimitClearBound, r.cfg.ConvergeBound)
	}
	return ""
}

// storeLossText describes the NATS node lost with its store, if the run
// had one (the full run).
func (r report) storeLossText() string {
	for _, f := range r.plan.Faults {
		if f.Kind != FaultNodeStoreLoss {
			continue
		}
		return fmt.Sprintf("- A NATS node lost with its store (the full run, after the node loss): kill -9 of the events stream's leader, its store directory deleted while it is down, restarted %s later under the same server name and routes (in Kubernetes: the pod rescheduled onto a new PersistentVolume). "+
			"Every stream and bucket is R3, so it must take them back from its peers, and the replicated consumers it was a replica of (the consumer groups' members, their delivery and ack state): within %s after it answered its readiness probe it must be, in every stream's, bucket's and such consumer's cluster information as their leaders report it, the leader or a current replica with lag 0 (a consumer deleted meanwhile, a member that left, is passed over), its own store (`/jsz`) holding every stream, and it must still be current at the end; nothing may be lost or run twice meanwhile (the other checks).\n",
			f.Down.Round(time.Second), f.Settle)
	}
	return ""
}

// nodeFreezeText describes the node freeze of the run, if it had one.
func (r report) nodeFreezeText() string {
	var targets []string
	for _, f := range r.plan.Faults {
		if f.Kind == FaultNodeFreeze {
			targets = append(targets, f.Target)
		}
	}
	if len(targets) == 0 {
		return ""
	}
	return fmt.Sprintf(" A frozen node (a VM pause): %s and every runner of it (their process groups) stopped together for %s, then resumed together; its peer must take its partitions and claims (KV `ambient-runners`) over before the thaw and restart the sessions (services/runner-manager/internal/claim, A paused node). "+
		"A stopped runner is not live, so the new runner beside it is no second one; after the thaw the old runner of each session taken over must be gone within %s (runner-manager measured 20-264 ms), and the samples before then with both live are counted as the thaw window, not as twice; any other second runner is twice. "+
		"No change of those sessions announced after the thaw (the API's watch) may name the old runner (ProcessSpawned `pid <old>`) or end them, unless the harness stopped, started or deleted them.",
		strings.Join(targets, ", "), r.cfg.NodeFreeze, thawBound)
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// trendText renders the convergence trend, at most about 20 points: the
// first, the last, and evenly spaced ones between.
func trendText(trend []trendPoint) string {
	if len(trend) == 0 {
		return ""
	}
	step := max(1, len(trend)/20)
	var parts []string
	for i, p := range trend {
		if i%step != 0 && i != len(trend)-1 {
			continue
		}
		wrong := strconv.Itoa(p.Wrong)
		if p.Wrong < 0 {
			wrong = "unreadable"
		}
		parts = append(parts, fmt.Sprintf("%ds: %s", int(p.After.Round(time.Second)/time.Second), wrong))
	}
	return strings.Join(parts, ", ")
}
