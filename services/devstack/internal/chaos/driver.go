package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	apisession "github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// Projects of a run: two of each executor, so both paths meet every fault
// and each path has more than one namespace.
var projectNames = []struct {
	name  string
	local bool
}{
	{"chaos-local-a", true}, {"chaos-local-b", true}, {"chaos-kube-a", false}, {"chaos-kube-b", false},
}

// oversizeBytes is the oversize object's annotation: under NATS' 1 MiB
// max_payload alone, over it as the old and new object of a MODIFIED event
// (issue 14 finding 3).
const oversizeBytes = 600 << 10

// overLimitBytes is the annotation of the over-limit sessions
// (FaultOverLimit): over NATS' 1 MiB max_payload alone, under the gRPC
// server's 4 MiB default receive limit (memapi sets none; the API client
// sends any size and receives up to apiclient.MaxRecvMsgSize).
// overLimitShrunk is what the shrink leaves of it.
const (
	overLimitBytes  = 1280 << 10
	overLimitShrunk = 1 << 10
)

// Results of a change.
const (
	resultOK      = "ok"
	resultRefused = "refused"
	// resultUnavailable: the API was down (gRPC Unavailable, REST 503) and
	// made no change; the audit accepts it during an API outage only.
	resultUnavailable = "unavailable"
	resultError       = "error"
)

// changeRecord is one change the driver made (or tried).
type changeRecord struct {
	At      time.Time
	Op      Op
	Planned Op // the planned kind when none of it could be made (no candidate)
	Object  string
	Result  string
	Err     string
}

// driver makes the API changes and keeps the model of what it asked for.
// Its methods are safe for concurrent use: the change schedule and the
// oversize fault call it from two goroutines.
type driver struct {
	api      *apiclient.Client
	phases   *restPhases
	localCap int

	mu      sync.Mutex // guards everything below
	rng     *rand.Rand
	m       *model
	journal []changeRecord
	seq     int
}

func newDriver(api *apiclient.Client, phases *restPhases, localCap int, rng *rand.Rand) *driver {
	return &driver{api: api, phases: phases, localCap: localCap, rng: rng, m: newModel()}
}

// setup creates the projects and their settings.
func (d *driver) setup(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, pn := range projectNames {
		p, err := d.api.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: pn.name})
		if err != nil {
			return fmt.Errorf("create project %s: %w", pn.name, err)
		}
		pr := &project{ID: p.GetMetadata().GetId(), Name: pn.name, Local: pn.local, Access: []Grant{{Group: groups[0], Role: allowedRoles[0]}}}
		access, err := json.Marshal(pr.Access)
		if err != nil {
			return fmt.Errorf("encode group_access: %w", err)
		}
		ps, err := d.api.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: pr.ID, GroupAccess: proto.String(string(access))})
		if err != nil {
			return fmt.Errorf("create settings of %s: %w", pn.name, err)
		}
		pr.SettingsID = ps.GetMetadata().GetId()
		d.m.projects = append(d.m.projects, pr)
	}
	return nil
}

// witnesses creates n local sessions and kube more in kube projects, which
// the schedule never touches, spread over the projects of each kind.
func (d *driver) witnesses(ctx context.Context, n, kube int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var local, kubeProjects []*project
	for _, p := range d.m.projects {
		if p.Local {
			local = append(local, p)
		} else {
			kubeProjects = append(kubeProjects, p)
		}
	}
	for _, w := range []struct {
		on []*project
		n  int
	}{{local, n}, {kubeProjects, kube}} {
		for i := range w.n {
			id, err := d.create(ctx, w.on[i%len(w.on)], false)
			if err != nil {
				return fmt.Errorf("witness %d: %w", i, err)
			}
			d.m.sessions[id].Pinned = true
		}
	}
	return nil
}

// keepKube reports whether id is a live kube session the schedule leaves
// alone from now on: a witness, or one it pins now. Unknown, deleted and
// local sessions are not.
func (d *driver) keepKube(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.m.sessions[id]
	if !ok || s.Deleted || s.Project.Local {
		return false
	}
	s.Pinned = true
	return true
}

// projectIDs returns the ids of the local or the kube projects.
func (d *driver) projectIDs(local bool) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.m.projects {
		if p.Local == local {
			out = append(out, p.ID)
		}
	}
	return out
}

// apply makes one change of kind op, or of a fallback kind when nothing can
// take op now (nothing to stop, ...).
func (d *driver) apply(ctx context.Context, op Op) changeRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.applyLocked(ctx, op)
	if rec.Op != op {
		rec.Planned = op
	}
	d.journal = append(d.journal, rec)
	return rec
}

func (d *driver) applyLocked(ctx context.Context, op Op) changeRecord {
	rec := changeRecord{At: time.Now(), Op: op}
	var err error
	switch op {
	case OpCreate:
		rec.Object, err = d.create(ctx, d.pickProject(), false)
	case OpUpdate:
		s := d.pick(func(s *session) bool { return !s.Pinned })
		if s == nil {
			return d.applyLocked(ctx, OpCreate)
		}
		rec.Object, err = s.ID, d.update(ctx, s)
	case OpStop:
		s := d.pickPhase(ctx, func(s *session) bool { return s.Running && !s.Pinned }, stoppable...)
		if s == nil {
			return d.applyLocked(ctx, OpUpdate)
		}
		rec.Object, err = s.ID, d.stop(ctx, s)
	case OpStart:
		s := d.pickPhase(ctx, func(s *session) bool {
			return !s.Running && !s.Pinned && (!s.Project.Local || d.m.localWanted() < d.localCap)
		}, startable...)
		if s == nil {
			return d.applyLocked(ctx, OpCreate)
		}
		rec.Object, err = s.ID, d.start(ctx, s)
	case OpDelete:
		s := d.pick(func(s *session) bool { return !s.Pinned })
		if s == nil {
			return d.applyLocked(ctx, OpCreate)
		}
		rec.Object, err = s.ID, d.delete(ctx, s)
	case OpSettings:
		p := d.m.projects[d.rng.IntN(len(d.m.projects))]
		rec.Object, err = p.SettingsID, d.settings(ctx, p)
	}
	rec.Result, rec.Err = resultOf(err)
	return rec
}

// resultOf classifies the outcome of a change.
func resultOf(err error) (result, msg string) {
	switch {
	case err == nil:
		return resultOK, ""
	case errors.Is(err, ErrRefused):
		return resultRefused, err.Error()
	case errors.Is(err, ErrUnavailable), status.Code(err) == codes.Unavailable:
		return resultUnavailable, err.Error()
	default:
		return resultError, err.Error()
	}
}

// pickProject picks where a new session goes: a local project while fewer
// than localCap sessions want a local runner (3 in 5 creates), else kube.
func (d *driver) pickProject() *project {
	local := d.m.localWanted() < d.localCap && d.rng.IntN(5) < 3
	var ps []*project
	for _, p := range d.m.projects {
		if p.Local == local {
			ps = append(ps, p)
		}
	}
	return ps[d.rng.IntN(len(ps))]
}

func (d *driver) pick(keep func(*session) bool) *session {
	ss := d.m.live(keep)
	if len(ss) == 0 {
		return nil
	}
	return ss[d.rng.IntN(len(ss))]
}

// The phases the API starts and stops a session from (UPSTREAM-BEHAVIOUR:
// the real server's REST guards).
var (
	stoppable = []string{string(apisession.PhasePending), string(apisession.PhaseCreating), string(apisession.PhaseRunning)}
	startable = []string{string(apisession.PhaseNone), string(apisession.PhaseStopped), string(apisession.PhaseFailed), string(apisession.PhaseCompleted)}
)

// pickPhase picks a session whose API phase is one of phases, reading a few
// candidates: the API refuses start and stop from other phases, and the
// harness must not ask what a user could not.
func (d *driver) pickPhase(ctx context.Context, keep func(*session) bool, phases ...string) *session {
	ss := d.m.live(keep)
	d.rng.Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
	for _, s := range ss[:min(len(ss), 5)] {
		got, err := d.api.GetSession(ctx, s.ID)
		// A failed read skips the candidate.
		if err == nil && slices.Contains(phases, got.GetPhase()) {
			return s
		}
	}
	return nil
}

func (d *driver) create(ctx context.Context, p *project, oversize bool) (string, error) {
	if !oversize {
		return d.createWith(ctx, p, "", "")
	}
	id, err := d.createBig(ctx, p, "chaos-oversize", oversizeBytes)
	if err != nil {
		return "", err
	}
	d.m.sessions[id].Oversize = true
	return id, nil
}

// createBig creates a pinned session named name whose one annotation holds
// size bytes.
func (d *driver) createBig(ctx context.Context, p *project, name string, size int) (string, error) {
	blob, err := blobAnnotations(size)
	if err != nil {
		return "", err
	}
	id, err := d.createWith(ctx, p, name, blob)
	if err != nil {
		return "", err
	}
	d.m.sessions[id].Pinned = true
	return id, nil
}

// blobAnnotations are a session's annotations holding size bytes.
func blobAnnotations(size int) (string, error) {
	blob, err := json.Marshal(map[string]string{"chaos/blob": strings.Repeat("x", size)})
	if err != nil {
		return "", fmt.Errorf("encode annotations: %w", err)
	}
	return string(blob), nil
}

// createWith creates a running session in p, named name ("": chaos-<n>)
// with annotations ("": none), and adds it to the model.
func (d *driver) createWith(ctx context.Context, p *project, name, annotations string) (string, error) {
	d.seq++
	labels := fmt.Sprintf(`{%q:"0"}`, labelGen)
	req := &ambientv1.CreateSessionRequest{
		Name:      "chaos-" + strconv.Itoa(d.seq),
		Prompt:    proto.String("chaos change " + strconv.Itoa(d.seq)),
		ProjectId: proto.String(p.ID),
		Labels:    proto.String(labels),
	}
	if name != "" {
		req.Name = name
	}
	if annotations != "" {
		req.Annotations = proto.String(annotations)
	}
	s, err := d.api.CreateSession(ctx, req)
	if err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	now := time.Now()
	d.m.add(&session{ID: s.GetMetadata().GetId(), Project: p, Running: true, Created: now, Touched: now})
	return s.GetMetadata().GetId(), nil
}

func (d *driver) update(ctx context.Context, s *session) error {
	labels := fmt.Sprintf(`{%q:%q}`, labelGen, strconv.Itoa(s.Gen+1))
	if _, err := d.api.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: s.ID, Labels: proto.String(labels)}); err != nil {
		return fmt.Errorf("update session %s: %w", s.ID, err)
	}
	s.Gen++
	s.Touched = time.Now()
	return nil
}

func (d *driver) stop(ctx context.Context, s *session) error {
	if err := d.phases.Stop(ctx, s.ID); err != nil {
		return err
	}
	s.Running = false
	s.Touched = time.Now()
	return nil
}

func (d *driver) start(ctx context.Context, s *session) error {
	if err := d.phases.Start(ctx, s.ID); err != nil {
		return err
	}
	s.Running = true
	s.Touched = time.Now()
	return nil
}

func (d *driver) delete(ctx context.Context, s *session) error {
	if err := d.api.DeleteSession(ctx, s.ID); err != nil {
		return fmt.Errorf("delete session %s: %w", s.ID, err)
	}
	s.Deleted = true
	s.Touched = time.Now()
	d.m.deletes++
	return nil
}

// settings rewrites a project's group_access: one to three grants, and
// now and then one the allow list refuses.
func (d *driver) settings(ctx context.Context, p *project) error {
	var access []Grant
	// An edit that writes what is there is no change: draw again.
	for range 10 {
		access = nil
		for range 1 + d.rng.IntN(3) {
			access = append(access, Grant{Group: groups[d.rng.IntN(len(groups))], Role: allowedRoles[d.rng.IntN(len(allowedRoles))]})
		}
		if d.rng.IntN(10) == 0 {
			access = append(access, Grant{Group: "chaos-escalate", Role: refusedRole})
		}
		if !slices.Equal(wantBindings(access), wantBindings(p.Access)) {
			break
		}
	}
	b, err := json.Marshal(access)
	if err != nil {
		return fmt.Errorf("encode group_access: %w", err)
	}
	if _, err := d.api.UpdateProjectSettings(ctx, &ambientv1.UpdateProjectSettingsRequest{Id: p.SettingsID, GroupAccess: proto.String(string(b))}); err != nil {
		return fmt.Errorf("update settings %s: %w", p.SettingsID, err)
	}
	p.Access = access
	return nil
}

// createOversize creates the oversize session in a local project.
func (d *driver) createOversize(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.firstProject(true)
	if p == nil {
		return "", errors.New("no local project")
	}
	id, err := d.create(ctx, p, true)
	d.record(OpCreate, id, err)
	return id, err
}

// createOverLimit creates a session over the event payload limit
// (overLimitBytes of annotations) in the first local or kube project, with
// the API path of every create; the model marks it OverLimit and pinned.
func (d *driver) createOverLimit(ctx context.Context, local bool) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.firstProject(local)
	if p == nil {
		return "", fmt.Errorf("no project (local %t)", local)
	}
	name := "chaos-over-limit-kube"
	if local {
		name = "chaos-over-limit-local"
	}
	id, err := d.createBig(ctx, p, name, overLimitBytes)
	if err == nil {
		d.m.sessions[id].OverLimit = true
	}
	d.record(OpCreate, id, err)
	if err != nil {
		return "", fmt.Errorf("over-limit session: %w", err)
	}
	return id, nil
}

// shrink makes the over-limit session id smaller than the payload limit
// again (overLimitShrunk bytes of annotations), through the API's update
// as the schedule's updates go; the model then holds it as an ordinary
// pinned session.
func (d *driver) shrink(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.m.sessions[id]
	if !ok {
		return fmt.Errorf("unknown session %s", id)
	}
	blob, err := blobAnnotations(overLimitShrunk)
	if err == nil {
		_, err = d.api.UpdateSession(ctx, &ambientv1.UpdateSessionRequest{Id: id, Annotations: proto.String(blob)})
	}
	if err != nil {
		err = fmt.Errorf("shrink session %s: %w", id, err)
	} else {
		s.OverLimit = false
		s.Touched = time.Now()
	}
	d.record(OpUpdate, id, err)
	return err
}

// firstProject returns the first local or kube project (nil: none).
func (d *driver) firstProject(local bool) *project {
	for _, p := range d.m.projects {
		if p.Local == local {
			return p
		}
	}
	return nil
}

// kubeVictims makes the changes a kube-apiserver outage loses (issue 14
// finding 2): it deletes one kube session and rewrites a kube project's
// group_access. It returns what it did.
func (d *driver) kubeVictims(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var notes []string
	var errs []error
	if s := d.pick(func(s *session) bool { return !s.Pinned && !s.Project.Local }); s != nil {
		err := d.delete(ctx, s)
		d.record(OpDelete, s.ID, err)
		errs = append(errs, err)
		notes = append(notes, "deleted kube session "+s.ID)
	}
	for _, p := range d.m.projects {
		if p.Local {
			continue
		}
		err := d.settings(ctx, p)
		d.record(OpSettings, p.SettingsID, err)
		errs = append(errs, err)
		notes = append(notes, "rewrote group_access of "+p.Name)
		break
	}
	return strings.Join(notes, "; ") + " while it was down", errors.Join(errs...)
}

// runnerKillQuiet is how long a session must have been left alone before
// its runner is killed: a change just made may still be on its way.
const runnerKillQuiet = 5 * time.Second

// errNoRunnerToKill: no session qualifies for a runner kill on the replica
// (yet).
var errNoRunnerToKill = errors.New("no runner to kill")

// killRunnerWithin is killRunner, tried again every interval with the
// newest process table (latest) while no session qualifies, for up to
// limit. A replica that was just frozen or killed runs only the sessions
// started since its return (its earlier ones moved to its peer), each
// changed moments ago, and the sessions that stay (the witnesses) are
// pinned; a runner kill scheduled then would otherwise find nothing to
// kill (seen in a full run: 10 s after a thaw, 0 candidates; in a short
// one, none for 30 s while the rebalance's lost deliveries held the
// replica's events back for an AckWait). It also returns how long it
// waited.
func (d *driver) killRunnerWithin(ctx context.Context, latest func() map[string][]runnerProc, replica string, kill func(pid int) error, limit, interval time.Duration) (runnerProc, time.Duration, error) {
	start := time.Now()
	for {
		killed, err := d.killRunner(ctx, latest(), replica, kill)
		waited := time.Since(start)
		if !errors.Is(err, errNoRunnerToKill) || waited >= limit {
			return killed, waited, err
		}
		select {
		case <-ctx.Done():
			return runnerProc{}, waited, fmt.Errorf("%w (waited %s)", err, waited.Round(time.Second))
		case <-time.After(interval):
		}
	}
}

// killRunner picks a running local session the schedule may change (not
// pinned, untouched for runnerKillQuiet) whose one runner (runners: the
// process table by session) runs on replica ("": any) and whose API phase is
// Running, calls kill with the runner's pid, and, when that worked, pins
// the session and records that its runner was killed: from then on the
// schedule leaves it alone and the audit wants it ended (RunnerKilled).
// It returns the runner killed.
func (d *driver) killRunner(ctx context.Context, runners map[string][]runnerProc, replica string, kill func(pid int) error) (runnerProc, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	quiet := time.Now().Add(-runnerKillQuiet)
	ss := d.m.live(func(s *session) bool {
		rs := runners[s.ID]
		return s.Project.Local && s.Running && !s.Pinned && s.Touched.Before(quiet) && len(rs) == 1 && (replica == "" || rs[0].Replica == replica)
	})
	d.rng.Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
	for _, s := range ss[:min(len(ss), 10)] {
		got, err := d.api.GetSession(ctx, s.ID)
		if err != nil || got.GetPhase() != phaseRunning {
			continue
		}
		r := runners[s.ID][0]
		if err := kill(r.PID); err != nil {
			return runnerProc{}, err
		}
		s.Pinned, s.Running, s.RunnerKilled = true, false, true
		return r, nil
	}
	on := replica
	if on == "" {
		on = "any replica"
	}
	return runnerProc{}, fmt.Errorf("%w: no running session with one runner on %s, untouched for %s, phase Running (of %d candidates)", errNoRunnerToKill, on, runnerKillQuiet, len(ss))
}

// stopSession stops one session outside the schedule (the oversize one).
func (d *driver) stopSession(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.m.sessions[id]
	if !ok {
		return fmt.Errorf("unknown session %s", id)
	}
	err := d.stop(ctx, s)
	d.record(OpStop, id, err)
	return err
}

// record journals a change made outside the schedule (by a fault).
func (d *driver) record(op Op, id string, err error) {
	rec := changeRecord{At: time.Now(), Op: op, Object: id}
	rec.Result, rec.Err = resultOf(err)
	d.journal = append(d.journal, rec)
}

// snapshot returns copies of the model and the journal.
func (d *driver) snapshot() ([]session, []project, []changeRecord, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ss, ps := d.m.snapshot()
	return ss, ps, slices.Clone(d.journal), d.m.deletes
}
