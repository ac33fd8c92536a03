package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/registry"
	apisession "github.com/ambient-code/control-plane/libs/session"
)

// Phases the audit expects of local sessions (runner-manager writes them).
const (
	phaseRunning   = string(apisession.PhaseRunning)
	phaseStopped   = string(apisession.PhaseStopped)
	phaseFailed    = string(apisession.PhaseFailed)
	phaseCompleted = string(apisession.PhaseCompleted)
)

// runner-manager's condition type and reason of a runner's exit
// (services/runner-manager/internal/status).
const (
	condRunnerStarted   = "RunnerStarted"
	condProcessSpawned  = "ProcessSpawned"
	reasonProcessExited = "ProcessExited"
)

// check is one audit check and what failed in it.
type check struct {
	Name string
	OK   bool
	// Detail is a one-line summary.
	Detail string
	// Failures lists what failed, one line each.
	Failures []string
}

// moved counts the sessions whose runner did not survive the NATS outage.
type moved struct {
	// Considered: sessions with one runner before the outage that the
	// harness did not change until the after-snapshot.
	Considered int
	// OtherReplica: the runner after runs on the other replica;
	// SameReplica: a new runner on the same replica; None: no runner after;
	// ClaimOnly: the same runner, but KV ambient-runners names another
	// owner after (the claim moved without the runner).
	OtherReplica, SameReplica, None, ClaimOnly int
	Lines                                      []string
}

// Total is the headline figure moved_by_outage.
func (m moved) Total() int { return m.OtherReplica + m.SameReplica + m.None + m.ClaimOnly }

// auditInput is everything the audit judges.
type auditInput struct {
	Sessions []session
	Projects []project
	Deletes  int
	Journal  []changeRecord
	Obs      observation
	// ObsErr: the final observation failed (the API could not be listed).
	ObsErr  error
	Sampler samplerStats
	// Operator counts the status writes on AgenticSessions (see operator).
	Operator operatorStats
	// Before and After bracket the NATS outage (zero when it did not run).
	Before, After placement
	Exits         []exitRecord
	// ScheduleStart: exits before it happened while the system started.
	ScheduleStart time.Time
	Faults        []faultRecord
	Streams       []streamInfo
	StreamsErr    error
	// Events is the whole events stream at the end, in order.
	Events    []streamEvent
	EventsErr error
	// Objects is the objects bucket at the end, with the events stream it
	// was compared with (see objectsCheck).
	Objects       objectsRead
	Converged     time.Duration // -1: did not converge
	ConvergeBound time.Duration
	ConvergeLimit time.Duration
	// Trend is the number of wrong objects at each look after the last
	// fault.
	Trend []trendPoint
}

// auditResult is the verdict.
type auditResult struct {
	Checks []check
	Lost   int
	// Twice counts the sessions of TwiceRecords.
	Twice int
	// TwiceRecords are the sessions seen with two live runners, one record
	// each (all their episodes but those of ThawWindow).
	TwiceRecords []twiceRecord
	// ThawWindow are the episodes in a node freeze's thaw window: a moved
	// session's old runner, thawed, beside its new one, within thawBound
	// of the thaw (see thawWindow); they do not count as twice.
	ThawWindow []twiceRecord
	Moved      moved
	Uncounted  int
}

// Passed reports whether every check passed.
func (r auditResult) Passed() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Line is the one-line result.
func (r auditResult) Line(converged time.Duration) string {
	return fmt.Sprintf("lost=%d twice=%d moved_by_outage=%d converged_s=%d", r.Lost, r.Twice, r.Moved.Total(), convergedSeconds(converged))
}

func convergedSeconds(d time.Duration) int {
	if d < 0 {
		return -1
	}
	return int(d.Round(time.Second) / time.Second)
}

// audit judges the run.
func audit(in auditInput) auditResult {
	var r auditResult
	objects := objectProblems(in.Sessions, in.Projects, in.Obs)
	r.Lost = len(objects)
	var lines []string
	for _, id := range sortedKeys(objects) {
		lines = append(lines, id+": "+strings.Join(objects[id], "; "))
	}
	if in.ObsErr != nil {
		lines = append([]string{"final observation failed: " + in.ObsErr.Error()}, lines...)
	}
	for _, part := range []struct{ name, err string }{{"KV ambient-runners", in.Obs.OwnersErr}, {"Kubernetes", in.Obs.KubeErr}} {
		if part.err != "" {
			lines = append(lines, part.name+" unreadable: "+part.err)
		}
	}
	r.Checks = append(r.Checks, check{
		Name:     "every object reached its desired state (phase, runner, registry, route, AgenticSession, RoleBindings, namespace)",
		OK:       r.Lost == 0 && in.ObsErr == nil && in.Obs.OwnersErr == "" && in.Obs.KubeErr == "",
		Detail:   fmt.Sprintf("%d of %d sessions and %d projects wrong", r.Lost, len(in.Sessions), len(in.Projects)),
		Failures: lines,
	})

	twice, window := thawWindow(in.Sampler.Twice, in.Faults)
	r.TwiceRecords, r.ThawWindow = bySession(twice), window
	r.Twice = len(r.TwiceRecords)
	tc := check{Name: "no session had two live runners at any sample", OK: r.Twice == 0 && in.Sampler.Err == nil,
		Detail: fmt.Sprintf("%d sessions twice in %d samples (slowest scan %s)", r.Twice, in.Sampler.Samples, in.Sampler.Slowest.Round(time.Millisecond))}
	if len(window) > 0 {
		tc.Detail += fmt.Sprintf("; not counted: %d sessions with their old runner, thawed, beside the new one in a node freeze's thaw window (%d samples, the longest %s; see the node freeze check)",
			len(bySession(window)), samplesOf(window), longestEpisode(window).Round(time.Millisecond))
	}
	for _, t := range r.TwiceRecords {
		tc.Failures = append(tc.Failures, fmt.Sprintf("%s: %s, for %d samples (%s) from t=%.1fs%s", t.Session, describeRunners(t.Runners), t.Samples,
			t.Last.Sub(t.First).Round(100*time.Millisecond), t.First.Sub(in.ScheduleStart).Seconds(), lastFault(in.Faults, t.First)))
	}
	if in.Sampler.Err != nil {
		tc.Failures = append(tc.Failures, "process table scan failed: "+in.Sampler.Err.Error())
	}
	r.Checks = append(r.Checks, tc)

	r.Moved = movedByOutage(in.Before, in.After, in.Journal)
	mc := check{Name: "no runner moved or restarted because of the NATS outage", OK: r.Moved.Total() == 0,
		Detail: fmt.Sprintf("%d of %d sessions: %d to the other replica, %d restarted on the same one, %d without a runner after, %d claims moved without their runner",
			r.Moved.Total(), r.Moved.Considered, r.Moved.OtherReplica, r.Moved.SameReplica, r.Moved.None, r.Moved.ClaimOnly),
		Failures: r.Moved.Lines}
	if in.Before.At.IsZero() || in.After.At.IsZero() {
		mc.OK, mc.Detail = false, "the NATS outage did not run to its end: nothing to compare"
	}
	r.Checks = append(r.Checks, mc)

	tp := tallyProblems(in.Sessions, in.Projects, in.Obs)
	r.Uncounted = tp.missing
	r.Checks = append(r.Checks, check{Name: "event-tally counted every object that exists, and the delete of every object it counted", OK: r.Uncounted == 0 && in.Obs.TallyErr == "",
		Detail: fmt.Sprintf("%d missing; %d sessions created and deleted while no informer watched were never announced (allowed: events carry states); %d sessions over the payload limit never counted (by design: reference events carry no state)",
			r.Uncounted, tp.unseenDeleted, tp.overLimit),
		Failures: append(errLines("tally", in.Obs.TallyErr), tp.lines...)})

	r.Checks = append(r.Checks, statusCheck(in.Sessions, in.Obs, in.Operator, in.Faults))
	r.Checks = append(r.Checks, convergedCheck(in.Converged, in.ConvergeBound, in.ConvergeLimit))
	r.Checks = append(r.Checks, replicasCheck(in.Streams, in.StreamsErr))
	r.Checks = append(r.Checks, oversizeCheck(in.Faults))
	r.Checks = append(r.Checks, exitsCheck(in.Exits, in.ScheduleStart))
	r.Checks = append(r.Checks, journalCheck(in.Journal, in.Faults))
	r.Checks = append(r.Checks, freezeCheck(in.Faults))
	r.Checks = append(r.Checks, nodeFreezeCheck(in.Faults, in.Journal, window, in.Obs))
	r.Checks = append(r.Checks, runnerKillCheck(in.Faults))
	r.Checks = append(r.Checks, eventOrderCheck(in.Events, in.EventsErr, in.Faults, in.ScheduleStart))
	r.Checks = append(r.Checks, objectsCheck(in.Objects))
	r.Checks = append(r.Checks, overLimitCheck(in.Faults, in.Events, in.EventsErr, in.ConvergeBound))
	r.Checks = append(r.Checks, storeLossCheck(in.Faults))
	return r
}

func errLines(what, err string) []string {
	if err == "" {
		return nil
	}
	return []string{what + ": " + err}
}

// objectProblems compares every session and project with what the harness
// asked for; it returns the problems by object ("session <id>", "project
// <name>").
func objectProblems(sessions []session, projects []project, obs observation) map[string][]string {
	out := map[string][]string{}
	for _, s := range sessions {
		if ps := sessionProblems(s, obs); len(ps) > 0 {
			out["session "+s.ID] = ps
		}
	}
	if obs.KubeErr != "" {
		return out // reported once by the caller
	}
	for _, p := range projects {
		var ps []string
		if !obs.Kube.Namespaces[p.Namespace()] {
			ps = append(ps, "no namespace "+p.Namespace())
		}
		got := slices.Clone(obs.Kube.Bindings[p.Namespace()])
		sortGrants(got)
		if want := wantBindings(p.Access); !slices.Equal(got, want) {
			ps = append(ps, fmt.Sprintf("RoleBindings %s, want %s", grantsText(got), grantsText(want)))
		}
		if len(ps) > 0 {
			out["project "+p.Name] = ps
		}
	}
	return out
}

// sessionProblems lists how session s differs from what the harness asked.
func sessionProblems(s session, obs observation) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	runners := obs.Runners[s.ID]
	api, inAPI := obs.Sessions[s.ID]
	crs := obs.Kube.CRs[s.ID]
	if obs.KubeErr != "" {
		crs = nil
	}
	owner, hasOwner := obs.Owners[s.ID]
	switch {
	case s.Deleted:
		if inAPI {
			add("deleted, still listed by the API")
		}
		if len(runners) > 0 {
			add("deleted, runner still alive (%s)", describeRunners(runners))
		}
		if len(crs) > 0 {
			add("deleted, AgenticSession %s/%s still exists", crs[0].Namespace, crs[0].Name)
		}
		if hasOwner {
			add("deleted, runner record of %s left in KV", owner.Owner)
		}
	case !inAPI:
		add("missing from the API")
	case s.OverLimit:
		out = append(out, overLimitProblems(s, api, runners, crs, obs.Owners)...)
	case !s.Project.Local:
		switch {
		case len(runners) > 0:
			add("kube session runs a local runner (%s)", describeRunners(runners))
		case obs.KubeErr != "":
		case len(crs) == 0:
			add("no AgenticSession")
		case len(crs) > 1:
			add("%d AgenticSessions", len(crs))
		case crs[0].Gen != strconv.Itoa(s.Gen):
			add("AgenticSession is stale: %s=%q, want %q", labelGen, crs[0].Gen, strconv.Itoa(s.Gen))
		default:
			out = append(out, statusProblems(api, crs[0])...)
		}
	case s.RunnerKilled:
		out = append(out, killedProblems(api, runners, obs.Unrouted[s.ID], obs.Proxies)...)
		if len(crs) > 0 {
			add("local session has an AgenticSession %s/%s", crs[0].Namespace, crs[0].Name)
		}
		if hasOwner {
			add("runner killed, its record of %s left in KV", owner.Owner)
		}
	case !s.Running:
		if len(crs) > 0 {
			add("local session has an AgenticSession %s/%s", crs[0].Namespace, crs[0].Name)
		}
		if api.Phase != phaseStopped {
			add("stopped, phase %q, want %q", api.Phase, phaseStopped)
		}
		if len(runners) > 0 {
			add("stopped, runner still alive (%s)", describeRunners(runners))
		}
	default:
		if len(crs) > 0 {
			add("local session has an AgenticSession %s/%s", crs[0].Namespace, crs[0].Name)
		}
		if api.Phase != phaseRunning {
			add("phase %q, want %q%s", api.Phase, phaseRunning, conditionsNote(api.Conditions))
		}
		switch len(runners) {
		case 0:
			add("no runner")
		case 1:
			if obs.Owners != nil && (!hasOwner || owner.Owner != runners[0].Replica) {
				add("runner on %s, KV owner %q", runners[0].Replica, owner.Owner)
			}
			if n := obs.Routes[s.ID]; n != obs.Proxies {
				add("reached through %d of %d agui-proxies", n, obs.Proxies)
			}
		default:
			add("%d runners (%s)", len(runners), describeRunners(runners))
		}
	}
	if inAPI && !s.Deleted && !s.OverLimit && tooLarge(api.Conditions) {
		// The informer removes it with the first version that fits: a
		// session made smaller again, or never over the limit (the
		// oversize one) must not keep it.
		add("under the payload limit, yet condition %s=False %s", condEventsPublished, reasonTooLarge)
	}
	return out
}

// overLimitProblems lists how a session left over the payload limit
// differs from what the informer documents (services/informer/README.md,
// No object blocks the stream): it carries the condition
// EventsPublished=False ObjectTooLarge, and consumers, which get only
// reference events of it, made nothing of it: no AgenticSession (the
// events and KV ambient-objects never held its state). A kube one has no
// runner and no runner record either; a local one may have both, as
// runner-manager's resync reads sessions from the API.
func overLimitProblems(s session, api apiSession, runners []runnerProc, crs []crInfo, owners map[string]registry.Endpoint) []string {
	var out []string
	if !tooLarge(api.Conditions) {
		out = append(out, fmt.Sprintf("over the payload limit, no condition %s=False %s%s", condEventsPublished, reasonTooLarge, conditionsNote(api.Conditions)))
	}
	if len(crs) > 0 {
		out = append(out, fmt.Sprintf("over the payload limit, AgenticSession %s/%s exists", crs[0].Namespace, crs[0].Name))
	}
	if s.Project.Local {
		return out
	}
	if len(runners) > 0 {
		out = append(out, fmt.Sprintf("kube session over the payload limit runs a local runner (%s)", describeRunners(runners)))
	}
	if o, ok := owners[s.ID]; ok {
		out = append(out, fmt.Sprintf("kube session over the payload limit has a runner record of %s in KV", o.Owner))
	}
	return out
}

// killedMessage is the RunnerStarted message of a session whose runner was
// killed with SIGKILL (runner-manager README, Lifecycle: "ProcessExited:
// killed by signal <name>", the stderr tail after it).
var killedMessage = "ProcessExited: killed by signal " + syscall.SIGKILL.String()

// killedProblems lists how a session whose runner was killed differs from
// the documented outcome (runner-manager README, Lifecycle: a runner
// killed by a signal it did not handle ends its session Failed, condition
// RunnerStarted=False reason ProcessExited, completion_time set; a terminal
// phase never starts anything; the claim is released, so every agui-proxy
// answers 404 for it). unrouted is how many of proxies answered 404.
func killedProblems(api apiSession, runners []runnerProc, unrouted, proxies int) []string {
	var out []string
	if api.Phase != phaseFailed {
		out = append(out, fmt.Sprintf("runner killed, phase %q, want %q%s", api.Phase, phaseFailed, conditionsNote(api.Conditions)))
	}
	c, ok := conditionOf(api.Conditions, condRunnerStarted)
	if !ok || c.Status != "False" || c.Reason != reasonProcessExited || !strings.HasPrefix(c.Message, killedMessage) {
		out = append(out, fmt.Sprintf("runner killed, RunnerStarted %s, want False %s %q", runnerStarted(api.Conditions), reasonProcessExited, killedMessage))
	}
	if !api.Completed {
		out = append(out, "runner killed, no completion_time")
	}
	if len(runners) > 0 {
		out = append(out, fmt.Sprintf("runner killed, runner started again (%s)", describeRunners(runners)))
	}
	if unrouted != proxies {
		out = append(out, fmt.Sprintf("runner killed, %d of %d agui-proxies answer 404 (unknown session)", unrouted, proxies))
	}
	return out
}

// statusProblems lists how a kube session differs from what its
// AgenticSession says: kube-reconciler writes the CR's uid and namespace,
// and the status the operator wrote, to the session.
func statusProblems(api apiSession, cr crInfo) []string {
	var out []string
	if api.KubeCRUID != cr.UID {
		out = append(out, fmt.Sprintf("kube_cr_uid %q, want the AgenticSession's %q", api.KubeCRUID, cr.UID))
	}
	if api.KubeNamespace != cr.Namespace {
		out = append(out, fmt.Sprintf("kube_namespace %q, want %q", api.KubeNamespace, cr.Namespace))
	}
	if cr.SDKSessionID != "" && api.SDKSessionID != cr.SDKSessionID {
		out = append(out, fmt.Sprintf("sdk_session_id %q, want %q from the AgenticSession's status", api.SDKSessionID, cr.SDKSessionID))
	}
	return out
}

// statusCheck says whether the status write-back was put to the test: the
// operator wrote statuses and some kube sessions still carry one at the
// end. Whether each was carried to its session is part of the objects
// check (statusProblems). It also fails when an AgenticSession lost the
// operator's last write (a CR deleted and made again under a live session:
// its status would be gone in a real cluster too).
//
// When faults killed a kube-reconciler replica, it also fails unless a
// session the operator wrote while the replica was dead, in the dead
// replica's partitions, lived to the end (the failover of the write-back
// was put to the test). Should no write have landed in those partitions at
// any such downtime (operatorStats.DownMissed), one written elsewhere then
// must have lived, and a note says so.
func statusCheck(sessions []session, obs observation, st operatorStats, faults []faultRecord) check {
	carried, lost := 0, []string{}
	var downKept, downDeadKept int
	for _, s := range sessions {
		if s.Deleted || s.Project.Local {
			continue
		}
		crs := obs.Kube.CRs[s.ID]
		if len(crs) != 1 {
			continue // the objects check names it
		}
		if crs[0].SDKSessionID != "" {
			carried++
		}
		want, ok := st.Last[s.ID]
		if ok && crs[0].SDKSessionID != want {
			lost = append(lost, fmt.Sprintf("session %s: the AgenticSession's status.sdkSessionId is %q, the operator last wrote %q", s.ID, crs[0].SDKSessionID, want))
			continue
		}
		if slices.Contains(st.Down, s.ID) {
			downKept++
		}
		if slices.Contains(st.DownDead, s.ID) {
			downDeadKept++
		}
	}
	c := check{Name: "the operator's status writes were made and kept (each must reach its session: see the objects check)", OK: st.Writes > 0 && carried > 0 && len(lost) == 0,
		Detail: fmt.Sprintf("%d status writes on AgenticSessions, %d failed, %d skipped (no AgenticSession yet); %d kube sessions carry one at the end, %d lost it",
			st.Writes, st.Failed, st.Skipped, carried, len(lost)),
		Failures: lost}
	if st.Writes == 0 || carried == 0 {
		c.Failures = append(c.Failures, "nothing tested the status write-back")
	}
	kills := reconcilerKills(faults)
	if kills == 0 {
		return c
	}
	c.Detail += fmt.Sprintf("; %d written while a kube-reconciler replica was dead, %d of them in its partitions; %d and %d of those sessions kept at the end",
		len(st.Down), len(st.DownDead), downKept, downDeadKept)
	switch {
	case downDeadKept > 0:
	case st.DownMissed >= kills && downKept > 0:
		c.Failures = append(c.Failures, "note: no write landed in a dead kube-reconciler's partitions while it was down (none of its sessions existed, its partitions could not be read, or the writes failed), so the writes made then met no failover")
	default:
		c.OK = false
		c.Failures = append(c.Failures, "nothing tested the status write-back's failover: no session written in a dead kube-reconciler's partitions while it was down lived to the end")
	}
	for _, f := range faults {
		if !f.downsReconciler() || !f.Takeover {
			continue
		}
		how, until := "down", "the restart"
		if f.Kind == FaultFreeze {
			how, until = "frozen", "the thaw"
		}
		c.Detail += fmt.Sprintf("; %s %s %s: its peer carried %d of %d writes in its partitions before %s", f.Target, how, f.Down, f.TakenOver, f.TakeoverWrites, until)
		switch {
		case f.TakeoverWrites == 0:
			c.Failures = append(c.Failures, fmt.Sprintf("note: no write landed in %s's partitions while it was %s, so its peer's takeover of the status write-back was not tested", f.Target, how))
		case f.TakenOver < f.TakeoverWrites:
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s stayed %s %s, past MEMBER_TTL, yet its peer carried only %d of the %d status writes in its partitions to the API before %s", f.Target, how, f.Down, f.TakenOver, f.TakeoverWrites, until))
		}
	}
	return c
}

// reconcilerKills counts the kills and freezes of kube-reconciler replicas
// in faults: the downtimes in which the operator wrote statuses.
func reconcilerKills(faults []faultRecord) int {
	n := 0
	for _, f := range faults {
		if f.downsReconciler() {
			n++
		}
	}
	return n
}

func conditionsNote(c string) string {
	if c == "" {
		return ""
	}
	if len(c) > 200 {
		c = c[:200] + "..."
	}
	return " (conditions " + c + ")"
}

func describeRunners(rs []runnerProc) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("pid %d on %s", r.PID, r.Replica)
	}
	return strings.Join(parts, ", ")
}

func grantsText(gs []Grant) string {
	if len(gs) == 0 {
		return "none"
	}
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = g.Group + "->" + g.Role
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// outageQuiet is how long before the NATS outage a session must have been
// left alone to count for moved_by_outage: a change made just before it
// may take effect during it.
const outageQuiet = 10 * time.Second

// movedByOutage compares where runners were before the NATS outage and
// after it settled. Only sessions with exactly one runner before that the
// harness left alone from outageQuiet before until the after-snapshot,
// and never deleted before it, count: a runner the user stopped is not
// moved by the outage.
func movedByOutage(before, after placement, journal []changeRecord) moved {
	var m moved
	if before.At.IsZero() || after.At.IsZero() {
		return m
	}
	touched := map[string]bool{}
	for _, c := range journal {
		switch {
		case c.At.After(after.At):
		case !c.At.Before(before.At.Add(-outageQuiet)),
			// Deleted at any time before: a runner that outlived its
			// session (a delete no informer announced) and is stopped by
			// runner-manager's resync after the outage was not moved by it.
			c.Op == OpDelete:
			touched[c.Object] = true
		}
	}
	for _, sid := range sortedKeys(before.Runners) {
		rs := before.Runners[sid]
		if len(rs) != 1 || touched[sid] {
			continue
		}
		m.Considered++
		was := rs[0]
		now := after.Runners[sid]
		ownerBefore, okBefore := before.Owners[sid]
		ownerAfter, okAfter := after.Owners[sid]
		switch {
		case len(now) == 1 && now[0].PID == was.PID && okBefore && okAfter && ownerBefore.Owner != ownerAfter.Owner:
			m.ClaimOnly++
			m.Lines = append(m.Lines, fmt.Sprintf("%s: pid %d on %s kept, KV owner %s before, %s after", sid, was.PID, was.Replica, ownerBefore.Owner, ownerAfter.Owner))
		case len(now) == 1 && now[0].PID == was.PID:
			continue
		case len(now) == 0:
			m.None++
			m.Lines = append(m.Lines, fmt.Sprintf("%s: pid %d on %s before, no runner after", sid, was.PID, was.Replica))
		case now[0].Replica != was.Replica:
			m.OtherReplica++
			m.Lines = append(m.Lines, fmt.Sprintf("%s: pid %d on %s before, %s after", sid, was.PID, was.Replica, describeRunners(now)))
		default:
			m.SameReplica++
			m.Lines = append(m.Lines, fmt.Sprintf("%s: pid %d on %s before, %s after", sid, was.PID, was.Replica, describeRunners(now)))
		}
	}
	return m
}

// tallyFindings is what event-tally missed.
type tallyFindings struct {
	lines   []string
	missing int
	// unseenDeleted counts sessions created and deleted between two looks
	// of the informer (a leader change, a watch cut, an outage): the event
	// stream carries states, not every change, so they were never
	// announced, and nothing needs them to be.
	unseenDeleted int
	// overLimit counts the live sessions over the payload limit: only
	// reference events of them were published, which event-tally, like
	// every consumer, cannot decode.
	overLimit int
}

// tallyProblems lists the objects that exist and event-tally never counted,
// and the deleted sessions it counted without their delete (per id: a
// count of deletes would let one object's repeated delete hide another's
// missing one).
func tallyProblems(sessions []session, projects []project, obs observation) tallyFindings {
	var f tallyFindings
	if obs.TallyErr != "" {
		return f
	}
	seen := func(resource, id string) bool {
		return slices.Contains(obs.Tally.Resources[resource].SeenIDs, id)
	}
	deleted := func(id string) bool {
		return slices.Contains(obs.Tally.Resources[tallySessions].DeletedIDs, id)
	}
	for _, s := range sessions {
		switch {
		case s.OverLimit && !s.Deleted:
			f.overLimit++
		case seen(tallySessions, s.ID) && s.Deleted && !deleted(s.ID):
			f.lines = append(f.lines, "session "+s.ID+" counted, deleted, its delete never counted")
		case seen(tallySessions, s.ID):
		case s.Deleted:
			f.unseenDeleted++
		default:
			f.lines = append(f.lines, "session "+s.ID+" never counted")
		}
	}
	for _, p := range projects {
		if !seen(tallyProjects, p.ID) {
			f.lines = append(f.lines, "project "+p.Name+" never counted")
		}
		if !seen(tallySettings, p.SettingsID) {
			f.lines = append(f.lines, "settings of "+p.Name+" never counted")
		}
	}
	f.missing = len(f.lines)
	return f
}

// oversizeStopBound is how long the oversize session's stop may take: the
// time any stop takes under faults, not a resync interval.
const oversizeStopBound = 30 * time.Second

// oversizeCheck wants the oversize object stopped like any other session.
func oversizeCheck(faults []faultRecord) check {
	c := check{Name: fmt.Sprintf("the oversize session's stop took effect within %s", oversizeStopBound), OK: true, Detail: "no oversize fault ran"}
	for _, f := range faults {
		if f.Kind != FaultOversize {
			continue
		}
		switch {
		case f.Err != "":
			c.OK, c.Detail = false, "the fault failed: "+f.Err
		case f.Took < 0:
			c.OK, c.Detail = false, fmt.Sprintf("session %s not stopped within %s", f.Target, oversizeStopLimit)
		default:
			c.OK = f.Took <= oversizeStopBound
			c.Detail = fmt.Sprintf("session %s stopped %s after the stop", f.Target, f.Took.Round(100*time.Millisecond))
		}
		if !c.OK {
			c.Failures = append(c.Failures, c.Detail)
		}
	}
	return c
}

// overLimitCheck judges the sessions over the payload limit
// (FaultOverLimit) by what the informer documents (its README, No object
// blocks the stream): each carried the condition EventsPublished=False
// ObjectTooLarge within overLimitFlagBound of its create; neither got an
// AgenticSession while over the limit, nor the kube one a runner or a
// runner record; the local one, made smaller, lost the condition within
// overLimitClearBound and was Running with one runner, recorded in KV,
// within bound (the run's convergence bound: it converges as any change
// does). In the events stream (evs, in order) each session's first event
// is a reference event (an ADDED), every event of the kept one is a
// reference event, and the shrunk one's first complete event is a
// MODIFIED published after the shrink: never an ADDED again, also after a
// leader change (a new leader finds the reference event as the object's
// last). A run without the fault (the short one) passes. What they look
// like at the end is the objects check's (overLimitProblems).
func overLimitCheck(faults []faultRecord, evs []streamEvent, evsErr error, bound time.Duration) check {
	c := check{Name: fmt.Sprintf("sessions over the payload limit were flagged ObjectTooLarge within %s, got neither an AgenticSession nor a runner, and consumers got reference events only; made smaller, the condition went within %s and the session converged within %s",
		overLimitFlagBound, overLimitClearBound, bound), OK: true, Detail: "no over-limit fault ran"}
	for _, f := range faults {
		if f.Kind != FaultOverLimit {
			continue
		}
		fail := func(format string, args ...any) {
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf(format, args...))
		}
		r := f.OverLimit
		switch {
		case f.Err != "":
			fail("the fault failed: %s", f.Err)
		case r == nil || !r.Watched:
			fail("the over-limit sessions were not watched to the end")
		}
		if r == nil {
			c.Detail = "the fault failed"
			continue
		}
		for _, s := range []struct {
			what, id string
			took     time.Duration
		}{{"the local session", f.Target, r.Flagged}, {"the kube session", r.Kept, r.KeptFlagged}} {
			if s.took < 0 || s.took > overLimitFlagBound {
				fail("%s %s flagged %s after its create, want within %s", s.what, s.id, durationText(s.took), overLimitFlagBound)
			}
		}
		for _, x := range append(slices.Clone(r.CRs), r.Runners...) {
			fail("over the payload limit: %s", x)
		}
		if r.Watched && (r.Cleared < 0 || r.Cleared > overLimitClearBound) {
			fail("session %s made smaller: condition gone %s after, want within %s", f.Target, durationText(r.Cleared), overLimitClearBound)
		}
		if r.Watched && (r.Converged < 0 || r.Converged > bound) {
			fail("session %s made smaller: Running with one runner %s after, want within %s", f.Target, durationText(r.Converged), bound)
		}
		if evsErr != nil {
			fail("the events stream could not be read: %v", evsErr)
		} else {
			for _, p := range overLimitEventProblems(evs, f.Target, r.Kept, f.Restored) {
				fail("%s", p)
			}
		}
		c.Detail = overLimitNote(*r, f.Down)
		if len(r.Leaders) < 2 {
			c.Detail += "; note: no informer leader change was seen while they were over the limit"
		}
	}
	if !c.OK {
		c.Detail += fmt.Sprintf("; %d failures", len(c.Failures))
	}
	return c
}

// overLimitEventProblems lists what in the events stream evs breaks the
// reference-event path for the local over-limit session (made smaller at
// shrunk; zero: never) and the kept kube one: a first event that is not a
// reference ADDED, an ADDED after the first event, a complete event of the
// local one before the shrink or of the kept one at all, the local one's
// first complete event not a MODIFIED, none at all after a shrink.
func overLimitEventProblems(evs []streamEvent, local, kept string, shrunk time.Time) []string {
	var out []string
	for _, id := range []string{local, kept} {
		key := tallySessions + "/" + id
		n, complete := 0, 0
		for _, e := range evs {
			if e.Key != key || e.Replayed {
				continue
			}
			n++
			if !e.Ref {
				complete++
			}
			// One problem per event, the first that applies.
			at := fmt.Sprintf("%s %s %s (seq %d)", key, e.Type, e.Version, e.Seq)
			switch {
			case n == 1 && (!e.Ref || e.Type != "ADDED"):
				out = append(out, at+": its first event, want a reference ADDED (the session was created over the limit)")
			case n > 1 && e.Type == "ADDED":
				out = append(out, at+": an ADDED after its first event")
			case e.Ref:
			case id == kept:
				out = append(out, at+": a complete event of the session kept over the limit")
			case shrunk.IsZero() || e.At.Before(shrunk):
				out = append(out, at+": a complete event before the session was made smaller")
			case complete == 1 && e.Type != "MODIFIED":
				out = append(out, at+": its first complete event, want a MODIFIED")
			}
		}
		switch {
		case n == 0:
			out = append(out, key+": no event in the stream")
		case id == local && !shrunk.IsZero() && complete == 0:
			out = append(out, key+": no complete event after it was made smaller")
		}
	}
	return out
}

// convergedCheck wants the system converged within bound after the last
// fault (issue 14: 30 s); limit is how long the harness waited.
func convergedCheck(converged, bound, limit time.Duration) check {
	c := check{Name: fmt.Sprintf("converged within %s after the last fault", bound), OK: converged >= 0 && converged <= bound}
	if converged < 0 {
		c.Detail = fmt.Sprintf("not within %s", limit)
	} else {
		c.Detail = fmt.Sprintf("in %ds", convergedSeconds(converged))
	}
	if !c.OK {
		c.Failures = append(c.Failures, c.Detail)
	}
	return c
}

// replicasCheck wants every stream and KV bucket at the cluster's size.
func replicasCheck(streams []streamInfo, err error) check {
	c := check{Name: fmt.Sprintf("every stream and KV bucket has %d replicas", natsReplicas), OK: err == nil}
	if err != nil {
		c.Failures = append(c.Failures, "list streams: "+err.Error())
	}
	for _, s := range streams {
		if s.Replicas != natsReplicas {
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s: %d replica(s)", s.Name, s.Replicas))
		}
	}
	c.Detail = fmt.Sprintf("%d streams, %d not at R%d", len(streams), len(c.Failures), natsReplicas)
	return c
}

// exitsCheck wants no process to have exited during the schedule except by
// a fault. Exits while the system started are listed, not failed: a
// service that gives up before its dependencies settle is restarted, as a
// Deployment would.
func exitsCheck(exits []exitRecord, scheduleStart time.Time) check {
	c := check{Name: "no process exited on its own during the schedule", OK: true}
	planned, startup := 0, 0
	for _, e := range exits {
		line := fmt.Sprintf("%s pid %d: %s after %s", e.Member, e.PID, e.Err, e.Ran.Round(time.Second))
		switch {
		case e.Planned:
			planned++
		case e.At.Before(scheduleStart):
			startup++
			c.Failures = append(c.Failures, "while starting (not failed): "+line)
		default:
			c.OK = false
			c.Failures = append(c.Failures, line)
		}
	}
	c.Detail = fmt.Sprintf("%d exits by faults, %d on their own, %d more while the system started", planned, len(c.Failures)-startup, startup)
	return c
}

// outageMargin widens an API outage's window for the changes it refused:
// a call sent just before the outage began may be answered after, and the
// probe that ends it polls.
const outageMargin = 2 * time.Second

// reconnectMargin widens it further after the API answers again: an outage
// closes the API's connections and refuses new ones, as a restart does, and
// the harness's gRPC client dials again on its own backoff, up to
// apiclient.DefaultReconnectMaxDelay plus grpc-go's 20 % jitter after the
// API is back; its calls meanwhile fail Unavailable, refused by the outage
// as much as those made during it.
const reconnectMargin = apiclient.DefaultReconnectMaxDelay*6/5 + outageMargin

// journalCheck wants every change the API accepted or refused with a
// reason; a change the API refused as unavailable counts as refused by the
// outage when it was made during an API outage, as a failure otherwise;
// any other error is the harness' or the API's failure.
func journalCheck(journal []changeRecord, faults []faultRecord) check {
	c := check{Name: "the API took every change (refused transitions and changes refused by an API outage aside)", OK: true}
	var ok, refused, byOutage int
	for _, r := range journal {
		switch {
		case r.Result == resultOK:
			ok++
		case r.Result == resultRefused:
			refused++
		case r.Result == resultUnavailable && inAPIOutage(faults, r.At):
			byOutage++
		default:
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s %s %s: %s", r.At.Format(time.TimeOnly), r.Op, r.Object, r.Err))
		}
	}
	c.Detail = fmt.Sprintf("%d made, %d refused, %d failed", ok, refused, len(c.Failures))
	if byOutage > 0 {
		c.Detail += fmt.Sprintf(", %d refused by an API outage", byOutage)
	}
	return c
}

// inAPIOutage reports whether t falls within an API outage of faults, from
// its start until the API answered again (or, when it never did, its
// planned end), widened by outageMargin before and reconnectMargin after.
func inAPIOutage(faults []faultRecord, t time.Time) bool {
	for _, f := range faults {
		if f.Kind != FaultAPIOutage {
			continue
		}
		end := f.Restored
		if end.IsZero() {
			end = f.Start.Add(f.Down)
		}
		if !t.Before(f.Start.Add(-outageMargin)) && t.Before(end.Add(reconnectMargin)) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lastFault names the last fault that began before t, to place an event.
func lastFault(faults []faultRecord, t time.Time) string {
	for i := len(faults) - 1; i >= 0; i-- {
		if !faults[i].Start.After(t) {
			return fmt.Sprintf(", after fault %d (%s %s)", i+1, faults[i].Kind, faults[i].Target)
		}
	}
	return ""
}

// versionTime is the updated_at part of an event version
// ("<updated_at unix micros, zero padded>-<content hash>").
func versionTime(v string) string {
	t, _, _ := strings.Cut(v, "-")
	return t
}

// olderVersion reports whether version a is of an older state than b (by
// updated_at; two states of one instant are not ordered).
func olderVersion(a, b string) bool {
	ta, tb := versionTime(a), versionTime(b)
	if len(ta) != len(tb) {
		return len(ta) < len(tb)
	}
	return ta < tb
}

// eventOrderProblems lists the events of the stream (in stream order) that
// break what consumers rely on: per object, no event of an older state
// after one of a newer state, no event of the same state and type twice
// (JetStream drops a duplicate within its window; one outside it, or of
// another id, is stored), and nothing after its DELETED (ids are never
// reused). A leader that resumes from a freeze after another took its
// lease over, and publishes what it had before it notices, breaks the
// first rule. Each line names the fault before the event.
func eventOrderProblems(evs []streamEvent, faults []faultRecord, t0 time.Time) []string {
	var out []string
	last := map[string]streamEvent{}
	for _, e := range evs {
		if e.Type == "undecodable" {
			out = append(out, fmt.Sprintf("seq %d at t=%.1fs: not a ResourceEvent%s", e.Seq, e.At.Sub(t0).Seconds(), lastFault(faults, e.At)))
			continue
		}
		if e.Replayed {
			// A dead letter published again for one consumer group: a
			// copy of an older event, which changes no state.
			continue
		}
		p, seen := last[e.Key]
		last[e.Key] = e
		if !seen {
			continue
		}
		var what string
		switch {
		case p.Type == "DELETED":
			what = "after its DELETED"
		case olderVersion(e.Version, p.Version):
			what = "an older state after a newer one:"
		case e.Version == p.Version && e.Type == p.Type:
			what = "published twice: after"
		default:
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s %s (seq %d, t=%.1fs) %s %s %s (seq %d, t=%.1fs)%s", e.Key, e.Type, e.Version, e.Seq, e.At.Sub(t0).Seconds(),
			what, p.Type, p.Version, p.Seq, p.At.Sub(t0).Seconds(), lastFault(faults, e.At)))
	}
	return out
}

// eventOrderCheck judges the whole events stream (eventOrderProblems).
func eventOrderCheck(evs []streamEvent, err error, faults []faultRecord, t0 time.Time) check {
	c := check{Name: "the events stream never went back: per object no older state after a newer one, no event twice, nothing after its delete"}
	c.Failures = eventOrderProblems(evs, faults, t0)
	if err != nil {
		c.Failures = append(c.Failures, "read the events stream: "+err.Error())
	}
	c.OK = len(c.Failures) == 0 && len(evs) > 0
	c.Detail = fmt.Sprintf("%d events read, %d out of order", len(evs), len(c.Failures))
	if len(evs) == 0 && err == nil {
		c.Failures = append(c.Failures, "no event read")
	}
	return c
}

// objectsRead is the informer's objects bucket (KV ambient-objects) at
// the end and the events stream it was compared with.
type objectsRead struct {
	// Entries are the bucket's live entries (the owed-write floor keys
	// left out).
	Entries []kvEntry
	// Events is the whole events stream, in order, as last read.
	Events []streamEvent
	// FirstSeq is the stream's first sequence: above 1, events aged out.
	FirstSeq uint64
	// Reads counts the reads of the bucket; Waited is the time from the
	// first to the last (the bucket is read again while it disagrees, up
	// to kvAgreeLimit).
	Reads  int
	Waited time.Duration
	// Err: the bucket or the stream could not be read.
	Err error
}

// objectsFindings is how the objects bucket compares with the stream.
type objectsFindings struct {
	// Live: objects whose entry is the state of their last event (same
	// version, event_seq its sequence); Deleted: objects whose last
	// event is a DELETED and that have no entry.
	Live, Deleted int
	// Exempt: Ref, objects whose last event is a reference event;
	// AgedOut, entries of objects without an event left in the stream,
	// older than its first sequence.
	Ref, AgedOut int
	// Replays counts the replayed dead letters skipped.
	Replays int
	// Mismatches names each object that disagrees and how, in key order.
	Mismatches []string
}

// Compared counts the objects judged (exempt ones aside).
func (f objectsFindings) Compared() int { return f.Live + f.Deleted + len(f.Mismatches) }

// compareObjects compares the objects bucket's entries with the events
// stream evs (in stream order; first is the stream's first sequence).
// Each object's last event decides, a replayed dead letter aside (a copy
// of an older event for one consumer group, as the informer's
// publish.Tail skips it) and an undecodable message aside (the order
// check reports it):
//   - ADDED or MODIFIED: the bucket holds that state (the event's
//     version) with event_seq the event's stream sequence;
//   - DELETED: the bucket holds no entry (a deleted object brought back,
//     by a deposed leader's late write or a NATS store rebuild, would be
//     re-applied by kube-reconciler's resync);
//   - a reference event (the object alone over the payload limit): exempt,
//     the bucket keeps the last state that fitted, or nothing;
//   - no event left, an entry older than the stream's first sequence:
//     exempt, its events aged out (STREAM_MAX_AGE); an entry of an object
//     without any event while nothing aged out disagrees.
func compareObjects(evs []streamEvent, first uint64, entries []kvEntry) objectsFindings {
	var f objectsFindings
	last := map[string]streamEvent{}
	for _, e := range evs {
		switch {
		case e.Type == "undecodable":
		case e.Replayed:
			f.Replays++
		default:
			last[e.Key] = e
		}
	}
	held := map[string]kvEntry{}
	var bad []string
	for _, en := range entries {
		if en.Err != "" {
			bad = append(bad, fmt.Sprintf("key %s (revision %d): %s", en.Key, en.Revision, en.Err))
			continue
		}
		held[en.Key] = en
	}
	keys := sortedKeys(last)
	for k := range held {
		if _, ok := last[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	entry := func(en kvEntry) string {
		return fmt.Sprintf("%s (event_seq %d, revision %d)", en.Version, en.EventSeq, en.Revision)
	}
	for _, k := range keys {
		e, published := last[k]
		en, inKV := held[k]
		mismatch := func(format string, args ...any) {
			f.Mismatches = append(f.Mismatches, k+": "+fmt.Sprintf(format, args...))
		}
		switch {
		case published && e.Ref:
			f.Ref++
		case !published && first > 1 && en.EventSeq < first:
			f.AgedOut++
		case !published:
			mismatch("no event in the stream (first sequence %d), KV holds %s", first, entry(en))
		case e.Type == "DELETED" && inKV:
			mismatch("deleted (seq %d), KV still holds %s", e.Seq, entry(en))
		case e.Type == "DELETED":
			f.Deleted++
		case !inKV:
			mismatch("last event %s %s (seq %d), no entry in KV", e.Type, e.Version, e.Seq)
		case en.Version != e.Version || en.EventSeq != e.Seq:
			what := "another state"
			switch {
			case en.Version == e.Version:
				what = "that state"
			case olderVersion(en.Version, e.Version):
				what = "an older state"
			case olderVersion(e.Version, en.Version):
				what = "a newer state"
			}
			mismatch("last event %s %s (seq %d), KV holds %s %s", e.Type, e.Version, e.Seq, what, entry(en))
		default:
			f.Live++
		}
	}
	f.Mismatches = append(f.Mismatches, bad...)
	return f
}

// objectsShown is how many mismatches the objects check's detail names.
const objectsShown = 3

// objectsCheck wants the objects bucket to agree with the events stream
// at the end (compareObjects): it is the informer's persisted cache, which
// a new leader diffs against and kube-reconciler's resync applies.
func objectsCheck(rd objectsRead) check {
	c := check{Name: "the objects bucket (KV " + objectsBucket + ") agrees with the events stream: per object the state and event_seq of its last event, no entry after its DELETED"}
	if rd.Err != nil {
		// Half a read compares nothing: every object would look wrong.
		c.Failures = []string{"read the objects bucket or the events stream: " + rd.Err.Error()}
		c.Detail = fmt.Sprintf("not compared: %d entries and %d events read; unreadable: %s", len(rd.Entries), len(rd.Events), rd.Err.Error())
		return c
	}
	f := compareObjects(rd.Events, rd.FirstSeq, rd.Entries)
	c.Failures = slices.Clone(f.Mismatches)
	c.OK = len(c.Failures) == 0 && f.Compared() > 0
	c.Detail = fmt.Sprintf("%d objects compared: %d entries are their last event's state, %d deleted objects have none; exempt: %d whose last event is a reference event (over the payload limit), %d aged out of the stream; %d replayed dead letters skipped; %d mismatches",
		f.Compared(), f.Live, f.Deleted, f.Ref, f.AgedOut, f.Replays, len(f.Mismatches))
	if n := len(f.Mismatches); n > 0 {
		c.Detail += " (" + strings.Join(f.Mismatches[:min(n, objectsShown)], "; ")
		if n > objectsShown {
			c.Detail += fmt.Sprintf("; %d more", n-objectsShown)
		}
		c.Detail += ")"
	}
	switch {
	case rd.Reads > 1 && len(f.Mismatches) == 0:
		c.Detail += fmt.Sprintf("; agreed at read %d, %s after the first", rd.Reads, rd.Waited.Round(100*time.Millisecond))
	case rd.Reads > 1:
		c.Detail += fmt.Sprintf("; still so after %d reads over %s", rd.Reads, rd.Waited.Round(100*time.Millisecond))
	}
	if f.Compared() == 0 {
		c.Failures = append(c.Failures, "no object compared")
	}
	return c
}

// freezeCheck wants every freeze to have done what it is for: the frozen
// member's lease or partitions held by another before the thaw (else it
// resumed into nothing a kill does not test), and it resumed ready; a
// frozen node's replica must also have lost every claim (KV
// ambient-runners) before the thaw. What the resumed member then does is
// judged by the other checks: nothing twice, the objects, the status
// write-back (carried before the thaw), the order of the events stream,
// the node freeze check.
func freezeCheck(faults []faultRecord) check {
	c := check{Name: "every frozen member lost its lease or partitions to a peer before its thaw (a frozen node's replica its partitions and claims), and resumed", OK: true}
	n := 0
	for _, f := range faults {
		if f.Kind != FaultFreeze && f.Kind != FaultNodeFreeze {
			continue
		}
		n++
		what := "freeze"
		if f.Kind == FaultNodeFreeze {
			what = "node freeze"
		}
		switch {
		case f.Err != "":
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s of %s: %s", what, f.Target, f.Err))
		case len(f.StillClaimed) > 0:
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s of %s for %s: its claims of %s not taken over (%s)", what, f.Target, f.Down, strings.Join(f.StillClaimed, ", "), f.Note))
		case !f.Moved:
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s of %s for %s: nothing moved (%s)", what, f.Target, f.Down, f.Note))
		}
	}
	c.Detail = fmt.Sprintf("%d freezes, %d failed", n, len(c.Failures))
	if n == 0 {
		c.OK, c.Detail = false, "no freeze ran"
	}
	return c
}

// runnerKillCheck wants the session of every killed runner ended (phase
// terminal, no runner) within runnerKillLimit and never started again
// meanwhile; that it ended as documented (Failed, ProcessExited, its
// record released, no route) is the objects check's (killedProblems).
func runnerKillCheck(faults []faultRecord) check {
	c := check{Name: fmt.Sprintf("the session of every killed runner ended within %s and was not started again", runnerKillLimit), OK: true}
	n := 0
	var took []string
	for _, f := range faults {
		if f.Kind != FaultRunnerKill {
			continue
		}
		n++
		switch {
		case f.Err != "":
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("runner kill on %s: %s", f.Target, f.Err))
		case f.Took < 0:
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("session %s: %s", f.Target, f.Note))
		default:
			took = append(took, f.Took.Round(100*time.Millisecond).String())
		}
		if len(f.Restarted) > 0 {
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("session %s: runner started again after the kill (pids %v)", f.Target, f.Restarted))
		}
	}
	c.Detail = fmt.Sprintf("%d runners killed; sessions ended after %s", n, strings.Join(took, ", "))
	if n == 0 {
		c.OK, c.Detail = false, "no runner was killed"
	}
	return c
}

// thawWindow splits the sampler's twice episodes. One is the thaw
// window's when a node freeze took its session over (faultRecord.Old) and
// it shows exactly the session's old runner, thawed, beside one runner on
// another replica, from no earlier than thawSlack before the SIGCONTs
// (a frozen runner is stopped, so not live, until then) to no later than
// thawBound after them: the moment runner-manager documents between the
// thaw and its old replica's news. Every other episode is twice: a third
// runner, an old runner live before the thaw (it escaped the freeze), or
// one live past the bound.
func thawWindow(episodes []twiceRecord, faults []faultRecord) (twice, window []twiceRecord) {
	for _, e := range episodes {
		if inThawWindow(e, faults) {
			window = append(window, e)
		} else {
			twice = append(twice, e)
		}
	}
	return twice, window
}

func inThawWindow(e twiceRecord, faults []faultRecord) bool {
	if len(e.Runners) != 2 {
		return false
	}
	for _, f := range faults {
		if f.Kind != FaultNodeFreeze || f.Thawed.IsZero() ||
			e.First.Before(f.Thawed.Add(-thawSlack)) || e.Last.After(f.Thawed.Add(thawBound)) {
			continue
		}
		for _, o := range f.Old {
			if o.Session != e.Session {
				continue
			}
			old := slices.IndexFunc(e.Runners, func(r runnerProc) bool { return r.PID == o.PID && r.Replica == f.Target })
			if old >= 0 && e.Runners[1-old].Replica != f.Target {
				return true
			}
		}
	}
	return false
}

// bySession merges episodes into one record per session: its first
// episode's start and runners, its last episode's end, all their samples;
// in order of their first episode.
func bySession(episodes []twiceRecord) []twiceRecord {
	var out []twiceRecord
	at := map[string]int{}
	for _, e := range episodes {
		i, ok := at[e.Session]
		if !ok {
			at[e.Session] = len(out)
			out = append(out, e)
			continue
		}
		if e.First.Before(out[i].First) {
			out[i].First, out[i].Runners = e.First, e.Runners
		}
		if e.Last.After(out[i].Last) {
			out[i].Last = e.Last
		}
		out[i].Samples += e.Samples
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].First.Before(out[j].First) })
	return out
}

func samplesOf(episodes []twiceRecord) int {
	n := 0
	for _, e := range episodes {
		n += e.Samples
	}
	return n
}

func longestEpisode(episodes []twiceRecord) time.Duration {
	var d time.Duration
	for _, e := range episodes {
		d = max(d, e.Last.Sub(e.First))
	}
	return d
}

// nodeFreezeCheck judges what a node freeze's replica did after its thaw
// (services/runner-manager/internal/claim, "A paused node"): the old
// runner of every session its peer took over gone within thawBound of the
// thaw and not alive at the end; and no write of the old runner's to
// those sessions announced after the thaw (oldRunnerWrite), for the
// sessions the harness left alone from outageQuiet before the freeze
// until thawWatch after the thaw (a stop or delete meanwhile ends the
// session by right). window are the thaw window's episodes of the twice
// check, given as a figure. A node freeze that moved no session tested
// nothing and fails; a run without a node freeze (the short one) passes.
func nodeFreezeCheck(faults []faultRecord, journal []changeRecord, window []twiceRecord, obs observation) check {
	c := check{Name: fmt.Sprintf("after a node freeze, the old runner of every session taken over was gone within %s of the thaw, and no write of it was announced after the thaw", thawBound), OK: true}
	var details []string
	for _, f := range faults {
		if f.Kind != FaultNodeFreeze {
			continue
		}
		fail := func(format string, args ...any) {
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("node freeze of %s: ", f.Target)+fmt.Sprintf(format, args...))
		}
		switch {
		case f.Err != "":
			fail("%s", f.Err)
		case f.Thawed.IsZero():
			fail("no thaw recorded")
		case len(f.Old) == 0:
			fail("no session was taken over before the thaw, nothing tested (%s)", f.Note)
		}
		var longest time.Duration
		for _, o := range f.Old {
			switch {
			case o.Lived < 0:
				fail("session %s: its old runner pid %d still alive %s after the thaw", o.Session, o.PID, thawWatch)
			case o.Lived > thawBound:
				fail("session %s: its old runner pid %d lived %s after the thaw, past %s", o.Session, o.PID, o.Lived.Round(time.Millisecond), thawBound)
			}
			if slices.ContainsFunc(obs.Runners[o.Session], func(r runnerProc) bool { return r.PID == o.PID }) {
				fail("session %s: its old runner pid %d still alive at the end", o.Session, o.PID)
			}
			longest = max(longest, o.Lived)
		}
		if f.WatchErr != "" {
			fail("the sessions' changes after the thaw were not watched to the end: %s", f.WatchErr)
		}
		touched := map[string]bool{}
		for _, j := range journal {
			if (j.Op == OpStop || j.Op == OpStart || j.Op == OpDelete) && !j.At.Before(f.Start.Add(-outageQuiet)) && j.At.Before(f.Thawed.Add(thawWatch)) {
				touched[j.Object] = true
			}
		}
		judged, alone := 0, 0
		for _, o := range f.Old {
			if touched[o.Session] {
				continue
			}
			alone++
			prev := sessionChange{Phase: o.Phase, Conditions: o.Conditions}
			for _, ch := range f.AfterThaw {
				if ch.Session != o.Session {
					continue
				}
				judged++
				if what := oldRunnerWrite(prev, ch, o.PID); what != "" {
					fail("session %s: %s announced %s after the thaw (phase %q, RunnerStarted %s)", o.Session, what, ch.At.Sub(f.Thawed).Round(time.Millisecond), ch.Phase, runnerStarted(ch.Conditions))
				}
				prev = ch
			}
		}
		var inWindow []twiceRecord
		for _, e := range window {
			if !e.First.Before(f.Thawed.Add(-thawSlack)) && !e.Last.After(f.Thawed.Add(thawBound)) {
				inWindow = append(inWindow, e)
			}
		}
		details = append(details, fmt.Sprintf("%s frozen %s with %d runners: %d sessions taken over, their old runners gone at most %s after the thaw; %d sessions in the thaw window (old and new runner live, %d samples, the longest %s); %d changes of the %d of them the harness left alone announced after the thaw",
			f.Target, f.Down, len(f.Frozen), len(f.Old), longest.Round(time.Millisecond), len(bySession(inWindow)), samplesOf(inWindow), longestEpisode(inWindow).Round(time.Millisecond), judged, alone))
	}
	c.Detail = strings.Join(details, "; ")
	if len(details) == 0 {
		c.Detail = "no node freeze ran"
	}
	if !c.OK {
		c.Detail += fmt.Sprintf("; %d failures", len(c.Failures))
	}
	return c
}

// oldRunnerWrite names what in ch, a change of a session a node freeze's
// peer took over announced after the thaw, can only be the old runner's
// (pid old) report, or a runner's end; "" for none. prev is the state
// before it. A change that leaves phase and conditions as they were is no
// status write (a label update). A status write whose ProcessSpawned names
// the old runner ("pid <old>, port ...") is the thawed replica's: the
// peer's restart names its new runner, and nothing else writes a local
// session's conditions. A terminal phase or RunnerStarted=False is a
// runner's end, which a session taken over and left alone must not see
// (the thawed replica kills its old runners without a write). The peer's
// own writes (Creating, then Running) pass.
func oldRunnerWrite(prev, ch sessionChange, old int) string {
	if ch.Phase == prev.Phase && ch.Conditions == prev.Conditions {
		return ""
	}
	if c, ok := conditionOf(ch.Conditions, condProcessSpawned); ok {
		var pid int
		if _, err := fmt.Sscanf(c.Message, "pid %d", &pid); err == nil && pid == old {
			return fmt.Sprintf("a status write naming the old runner (ProcessSpawned %q)", c.Message)
		}
	}
	if apisession.Phase(ch.Phase).Terminal() {
		return "a runner's end"
	}
	if c, ok := conditionOf(ch.Conditions, condRunnerStarted); ok && c.Status == "False" {
		return "a runner's end"
	}
	return ""
}

// storeLossCheck wants a NATS node that came back with an empty store
// (FaultNodeStoreLoss) a current replica, lag 0, of every stream and KV
// bucket of the cluster within the fault's settle time after it was ready,
// its own store holding them all, and still current at the end. That
// nothing was lost or doubled meanwhile is the other checks' (objects,
// twice, events order, objects bucket). A run without one (the short run)
// passes it.
func storeLossCheck(faults []faultRecord) check {
	c := check{Name: "a NATS node back with an empty store was a current replica (lag 0) of every stream, KV bucket and replicated consumer within its settle time, and at the end", OK: true, Detail: "no store loss in this run"}
	var details []string
	for _, f := range faults {
		if f.Kind != FaultNodeStoreLoss {
			continue
		}
		fail := func(format string, args ...any) {
			c.OK = false
			c.Failures = append(c.Failures, fmt.Sprintf("%s back with an empty store: ", f.Target)+fmt.Sprintf(format, args...))
		}
		sl := f.StoreLoss
		switch {
		case f.Err != "":
			fail("%s", f.Err)
			continue
		case sl == nil:
			fail("nothing recorded")
			continue
		case len(sl.Streams) == 0:
			fail("no stream to catch up on, nothing tested")
		case sl.CaughtUp < 0:
			fail("not a current replica %s after it was ready: %s", f.Settle, strings.Join(sl.Behind, "; "))
		case sl.LocalStreams < len(sl.Streams):
			fail("its store holds %d streams once current, want %d", sl.LocalStreams, len(sl.Streams))
		}
		if len(sl.EndBehind) > 0 {
			fail("not a current replica at the end: %s", strings.Join(sl.EndBehind, "; "))
		}
		if sl.CaughtUp >= 0 {
			details = append(details, fmt.Sprintf("%s: %d files (%.1f MiB) deleted; ready %s after its restart, current on %d streams and buckets and %d replicated consumers %s after it was ready; its store then held %d streams, %d messages; %d of %d still current at the end",
				f.Target, sl.Files, float64(sl.Bytes)/(1<<20), sl.Ready.Round(100*time.Millisecond), len(sl.Streams), len(sl.Consumers), sl.CaughtUp.Round(100*time.Millisecond),
				sl.LocalStreams, sl.LocalMsgs, len(sl.replicated())-len(sl.EndBehind), len(sl.replicated())))
		}
	}
	if len(details) > 0 || len(c.Failures) > 0 {
		c.Detail = fmt.Sprintf("%d failed", len(c.Failures))
		if len(details) > 0 {
			c.Detail = strings.Join(details, "; ") + "; " + c.Detail
		}
	}
	return c
}
