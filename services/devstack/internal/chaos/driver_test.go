package chaos

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
)

// TestDriverKeepsTheModelEqualToTheAPI: after a few hundred changes of every
// kind against the in-memory API (nothing else runs: no phase moves but
// the driver's), the model says exactly what the API holds: which sessions
// exist, their chaos-gen label, stopped or not, and each project's
// group_access. Pinned sessions are never touched, and the local cap holds.
func TestDriverKeepsTheModelEqualToTheAPI(t *testing.T) {
	srv := testenv.API(t)
	api := testenv.APIClient(t, srv)
	rng := rand.New(rand.NewPCG(3, 4))
	d := newDriver(api, newRESTPhases(srv.RESTURL(), testenv.APIToken), 6, rng)
	ctx := t.Context()
	if err := d.setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.witnesses(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	// Nothing runs runners here: write the phases an executor would, so
	// stops (from Running) and starts (from Stopped) have candidates.
	next := map[string]string{"": "Running", "Pending": "Running", "Stopping": "Stopped"}
	settle := func() {
		ss, err := api.ListSessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if to, ok := next[s.GetPhase()]; ok {
				if _, err := api.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: s.GetMetadata().GetId(), Phase: proto.String(to)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	plan := NewPlan(testPlanConfig(true, 300), rng)
	var kept session // kept by keepKube a third of the way in, as the operator does
	for i, c := range plan.Changes {
		if i%10 == 0 {
			settle()
		}
		if i == 100 {
			kept = keepOneKube(t, d)
		}
		if rec := d.apply(ctx, c.Op); rec.Result != resultOK {
			t.Fatalf("change %d %s: %s %s", i, c.Op, rec.Result, rec.Err)
		}
		if n := d.m.localWanted(); n > 6 {
			t.Fatalf("after change %d, %d sessions want a local runner, cap 6", i, n)
		}
	}
	if _, err := d.kubeVictims(ctx); err != nil {
		t.Fatal(err)
	}
	sessions, projects, journal, _ := d.snapshot()
	if len(journal) != 300+2 {
		t.Errorf("journal has %d changes, want 302", len(journal))
	}
	listed, err := api.ListSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*ambientv1.Session{}
	for _, s := range listed {
		byID[s.GetMetadata().GetId()] = s
	}
	ops := map[Op]int{}
	for _, r := range journal {
		ops[r.Op]++
	}
	for _, op := range []Op{OpCreate, OpUpdate, OpStop, OpStart, OpDelete, OpSettings} {
		if ops[op] == 0 {
			t.Errorf("no %s in 300 changes: %v", op, ops)
		}
	}
	for _, s := range sessions {
		got, ok := byID[s.ID]
		if s.Deleted != !ok {
			t.Errorf("session %s: deleted %t in the model, listed %t", s.ID, s.Deleted, ok)
			continue
		}
		if !ok {
			continue
		}
		var labels map[string]string
		if err := json.Unmarshal([]byte(got.GetLabels()), &labels); err != nil || labels[labelGen] != strconv.Itoa(s.Gen) {
			t.Errorf("session %s: labels %q, model gen %d", s.ID, got.GetLabels(), s.Gen)
		}
		stopped := slices.Contains([]string{"Stopping", "Stopped"}, got.GetPhase())
		if stopped == s.Running {
			t.Errorf("session %s: phase %q, model running %t", s.ID, got.GetPhase(), s.Running)
		}
		if s.ID == kept.ID {
			if s.Gen != kept.Gen || s.Running != kept.Running {
				t.Errorf("session %s kept by keepKube was changed: %+v, pinned as %+v", s.ID, s, kept)
			}
			continue
		}
		if s.Pinned && (s.Gen != 0 || !s.Running) {
			t.Errorf("pinned session %s was changed: %+v", s.ID, s)
		}
	}
	for _, p := range projects {
		got, err := api.GetProjectSettings(ctx, p.SettingsID)
		if err != nil {
			t.Fatal(err)
		}
		var access []Grant
		if err := json.Unmarshal([]byte(got.GetGroupAccess()), &access); err != nil || !slices.Equal(access, p.Access) {
			t.Errorf("project %s: group_access %s, model %v", p.Name, got.GetGroupAccess(), p.Access)
		}
	}
}

// keepOneKube keeps a live kube session with keepKube and returns it as it
// was then; keepKube refuses an unknown and a local session, and keeps the
// kube witness.
func keepOneKube(t *testing.T, d *driver) session {
	t.Helper()
	if d.keepKube("no-such-session") {
		t.Error("keepKube kept an unknown session")
	}
	var kube *session
	witnesses := 0
	for _, s := range d.m.live(func(*session) bool { return true }) {
		switch {
		case s.Project.Local && !s.Pinned && d.keepKube(s.ID):
			t.Errorf("keepKube kept local session %s", s.ID)
		case !s.Project.Local && s.Pinned:
			witnesses++
			if !d.keepKube(s.ID) {
				t.Errorf("keepKube refused kube witness %s", s.ID)
			}
		case !s.Project.Local && kube == nil:
			kube = s
		}
	}
	if witnesses != 1 {
		t.Errorf("%d kube witnesses, want 1", witnesses)
	}
	if kube == nil {
		t.Fatal("no live kube session to keep after 100 changes")
	}
	if !d.keepKube(kube.ID) || !kube.Pinned {
		t.Fatalf("keepKube(%s) did not keep it", kube.ID)
	}
	return *kube
}

// TestRegularWritesLeaveDownWrites: the operator's regular writes never
// pick an AgenticSession of a session written while a kube-reconciler was
// down (two CRs of one session included), so the value written then is
// the one the takeover check and the audit look for.
func TestRegularWritesLeaveDownWrites(t *testing.T) {
	crs := []crRef{{"a", "1", "s1"}, {"a", "2", "s2"}, {"b", "3", "s2"}, {"b", "4", "s3"}}
	got := regularTargets(slices.Clone(crs), []string{"s2"})
	if want := []crRef{crs[0], crs[3]}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	if got := regularTargets(slices.Clone(crs), nil); !slices.Equal(got, crs) {
		t.Errorf("targets with nothing written while down %v, want all %v", got, crs)
	}
}

// TestDriverOverLimit: the in-memory API takes a session over the event
// payload limit through the driver's create (the gRPC path every create
// takes: nothing refuses overLimitBytes), in a local and a kube project;
// the model marks both pinned and over the limit, and the shrink, an
// update of the annotations, leaves the local one under the limit in the
// API and in the model. Both are journalled.
func TestDriverOverLimit(t *testing.T) {
	srv := testenv.API(t)
	api := testenv.APIClient(t, srv)
	d := newDriver(api, newRESTPhases(srv.RESTURL(), testenv.APIToken), 6, rand.New(rand.NewPCG(5, 6)))
	ctx := t.Context()
	if err := d.setup(ctx); err != nil {
		t.Fatal(err)
	}
	size := func(id string) int {
		t.Helper()
		s, err := api.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return len(s.GetAnnotations())
	}
	ids := map[bool]string{}
	for _, local := range []bool{true, false} {
		id, err := d.createOverLimit(ctx, local)
		if err != nil {
			t.Fatalf("over-limit session (local %t): %v", local, err)
		}
		ids[local] = id
		if s := d.m.sessions[id]; !s.OverLimit || !s.Pinned || s.Project.Local != local || !s.Running {
			t.Errorf("model of %s: %+v, want a running, pinned session over the limit in a local %t project", id, s, local)
		}
		if n := size(id); n <= overLimitBytes || n <= 1<<20 {
			t.Errorf("session %s has %d bytes of annotations, want over %d and over 1 MiB", id, n, overLimitBytes)
		}
	}
	if err := d.shrink(ctx, ids[true]); err != nil {
		t.Fatal(err)
	}
	if n := size(ids[true]); n > 2*overLimitShrunk {
		t.Errorf("shrunk session has %d bytes of annotations, want about %d", n, overLimitShrunk)
	}
	if s := d.m.sessions[ids[true]]; s.OverLimit || !s.Pinned {
		t.Errorf("model of the shrunk session: %+v, want pinned, not over the limit", s)
	}
	if !d.m.sessions[ids[false]].OverLimit {
		t.Error("the kube session left the limit in the model")
	}
	_, _, journal, _ := d.snapshot()
	var ops []Op
	for _, r := range journal {
		if r.Result != resultOK {
			t.Errorf("journal: %+v", r)
		}
		ops = append(ops, r.Op)
	}
	if want := []Op{OpCreate, OpCreate, OpUpdate}; !slices.Equal(ops, want) {
		t.Errorf("journal ops %v, want %v", ops, want)
	}
	if err := d.shrink(ctx, "no-such-session"); err == nil {
		t.Error("shrink of an unknown session: want an error")
	}
}

// TestDriverKillRunnerWaitsForCandidate: a runner kill finds no session to
// kill on the replica at first (just back from a freeze, it runs only
// sessions changed moments ago); it looks again with the newest process
// table until one qualifies, and kills that one. With nothing ever
// qualifying it gives up after its limit with errNoRunnerToKill.
func TestDriverKillRunnerWaitsForCandidate(t *testing.T) {
	srv := testenv.API(t)
	api := testenv.APIClient(t, srv)
	d := newDriver(api, newRESTPhases(srv.RESTURL(), testenv.APIToken), 6, rand.New(rand.NewPCG(7, 8)))
	ctx := t.Context()
	if err := d.setup(ctx); err != nil {
		t.Fatal(err)
	}
	// quietRunning creates a local session that is Running and was last
	// changed a minute ago: one a runner kill may pick.
	quietRunning := func() string {
		t.Helper()
		id, err := d.createWith(ctx, d.firstProject(true), "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.UpdateSessionStatus(ctx, &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String(phaseRunning)}); err != nil {
			t.Fatal(err)
		}
		d.m.sessions[id].Touched = time.Now().Add(-time.Minute)
		return id
	}
	id := quietRunning()

	var looks atomic.Int32
	latest := func() map[string][]runnerProc {
		if looks.Add(1) < 3 { // the runner is not on the replica yet
			return map[string][]runnerProc{id: {{PID: 41, Session: id, Replica: "runner-manager-0"}}}
		}
		return map[string][]runnerProc{id: {{PID: 42, Session: id, Replica: "runner-manager-1"}}}
	}
	var killed []int
	kill := func(pid int) error { killed = append(killed, pid); return nil }
	got, _, err := d.killRunnerWithin(ctx, latest, "runner-manager-1", kill, time.Minute, time.Millisecond)
	want := runnerProc{PID: 42, Session: id, Replica: "runner-manager-1"}
	if err != nil || got != want || !slices.Equal(killed, []int{42}) || looks.Load() != 3 {
		t.Fatalf("killRunnerWithin = %+v, %v; killed %v after %d looks; want %+v killed at the third look", got, err, killed, looks.Load(), want)
	}
	if s := d.m.sessions[id]; !s.Pinned || !s.RunnerKilled || s.Running {
		t.Errorf("model %+v, want the session pinned with its runner killed", s)
	}

	// Nothing qualifies (the one session is pinned now): an error once the
	// limit passed.
	_, waited, err := d.killRunnerWithin(ctx, latest, "runner-manager-1", kill, 20*time.Millisecond, time.Millisecond)
	if !errors.Is(err, errNoRunnerToKill) || waited < 20*time.Millisecond || len(killed) != 1 {
		t.Errorf("with no candidate: err %v after %s, killed %v; want errNoRunnerToKill after the limit and no kill", err, waited, killed)
	}

	// Any replica (""): a session whose runner runs on runner-manager-0
	// qualifies too.
	other := quietRunning()
	onZero := func() map[string][]runnerProc {
		return map[string][]runnerProc{other: {{PID: 43, Session: other, Replica: "runner-manager-0"}}}
	}
	if _, _, err := d.killRunnerWithin(ctx, onZero, "runner-manager-1", kill, 0, time.Millisecond); !errors.Is(err, errNoRunnerToKill) {
		t.Fatalf("a runner on another replica was taken for runner-manager-1's: %v", err)
	}
	if got, _, err := d.killRunnerWithin(ctx, onZero, "", kill, 0, time.Millisecond); err != nil || got.PID != 43 || got.Replica != "runner-manager-0" {
		t.Errorf("any replica: %+v, %v; want runner 43 on runner-manager-0", got, err)
	}
}

// TestRESTPhasesUnavailableDuringOutage: memapi's outage closes its
// listeners and connections, as a restarting server does; a start or stop
// sent then is refused by the outage (ErrUnavailable), not a failure of the
// API, and goes through again after it.
func TestRESTPhasesUnavailableDuringOutage(t *testing.T) {
	srv := testenv.API(t)
	s, err := srv.Sessions().CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: "outage"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRESTPhases(srv.RESTURL(), testenv.APIToken)
	srv.StartOutage(time.Minute)
	err = r.Start(t.Context(), s.GetMetadata().GetId())
	if got, _ := resultOf(err); got != resultUnavailable {
		t.Errorf("start during the outage: %v (%s), want %s", err, got, resultUnavailable)
	}
	srv.EndOutage()
	if err := r.Start(t.Context(), s.GetMetadata().GetId()); err != nil {
		t.Errorf("start after the outage: %v", err)
	}
}
