package chaos

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambient-code/control-plane/libs/registry"
)

var (
	localP = &project{ID: "chaos-local-a", Name: "chaos-local-a", Local: true, SettingsID: "set-l"}
	kubeP  = &project{ID: "chaos-kube-a", Name: "chaos-kube-a", SettingsID: "set-k"}
)

// killedConditions are the conditions runner-manager writes when a runner
// is killed with SIGKILL (its stderr tail after the first line).
const killedConditions = `[{"type":"ProcessSpawned","status":"True","reason":"Spawned"},` +
	`{"type":"RunnerStarted","status":"False","reason":"ProcessExited","message":"ProcessExited: killed by signal killed\nstderr (last lines):\nbye"}]`

// healthy is an observation in which every object of sessions is where it
// should be; tests break one thing at a time.
func healthy(sessions []session, projects []project) observation {
	obs := observation{
		Sessions: map[string]apiSession{}, Runners: map[string][]runnerProc{}, Owners: map[string]registry.Endpoint{},
		Routes: map[string]int{}, Unrouted: map[string]int{}, Proxies: 2,
		Kube: kubeState{CRs: map[string][]crInfo{}, Bindings: map[string][]Grant{}, Namespaces: map[string]bool{}},
	}
	for _, s := range sessions {
		if s.Deleted {
			continue
		}
		phase := phaseStopped
		if s.Running {
			phase = phaseRunning
		}
		obs.Sessions[s.ID] = apiSession{Phase: phase}
		switch {
		case s.RunnerKilled:
			obs.Sessions[s.ID] = apiSession{Phase: phaseFailed, Completed: true, Conditions: killedConditions}
			obs.Unrouted[s.ID] = 2
		case !s.Project.Local:
			ns := s.Project.Namespace()
			obs.Sessions[s.ID] = apiSession{Phase: "Pending", KubeCRUID: "uid-" + s.ID, KubeNamespace: ns, SDKSessionID: "chaos-op-1"}
			obs.Kube.CRs[s.ID] = []crInfo{{Namespace: ns, Name: strings.ToLower(s.ID), Gen: "0", UID: "uid-" + s.ID, SDKSessionID: "chaos-op-1"}}
		case s.Running:
			obs.Runners[s.ID] = []runnerProc{{PID: 100, Session: s.ID, Replica: "runner-manager-0"}}
			obs.Owners[s.ID] = registry.Endpoint{SessionID: s.ID, Owner: "runner-manager-0"}
			obs.Routes[s.ID] = 2
		}
	}
	for _, p := range projects {
		obs.Kube.Namespaces[p.Namespace()] = true
		obs.Kube.Bindings[p.Namespace()] = wantBindings(p.Access)
	}
	return obs
}

// TestObjectProblems: each way an object can miss its desired state is
// found and named, and a healthy system has none.
func TestObjectProblems(t *testing.T) {
	sessions := []session{
		{ID: "run", Project: localP, Running: true},
		{ID: "stopped", Project: localP},
		{ID: "gone", Project: localP, Deleted: true},
		{ID: "kube", Project: kubeP, Running: true},
		{ID: "kubegone", Project: kubeP, Deleted: true},
	}
	access := []Grant{{"chaos-g1", "ambient-project-admin"}, {"chaos-escalate", refusedRole}}
	projects := []project{{ID: localP.ID, Name: localP.Name, Local: true, Access: access}, {ID: kubeP.ID, Name: kubeP.Name}}
	tests := []struct {
		name    string
		breakIt func(o *observation)
		want    map[string]string // object -> a phrase its problem names
	}{
		{name: "healthy", breakIt: func(*observation) {}, want: map[string]string{}},
		{name: "running without a runner", breakIt: func(o *observation) { delete(o.Runners, "run") },
			want: map[string]string{"session run": "no runner"}},
		{name: "running twice at the end", breakIt: func(o *observation) {
			o.Runners["run"] = append(o.Runners["run"], runnerProc{PID: 101, Session: "run", Replica: "runner-manager-1"})
		}, want: map[string]string{"session run": "2 runners"}},
		{name: "wrong phase", breakIt: func(o *observation) { o.Sessions["run"] = apiSession{Phase: "Creating"} },
			want: map[string]string{"session run": `phase "Creating"`}},
		{name: "registry names another owner", breakIt: func(o *observation) { o.Owners["run"] = registry.Endpoint{Owner: "runner-manager-1"} },
			want: map[string]string{"session run": "KV owner"}},
		{name: "one proxy cannot route", breakIt: func(o *observation) { o.Routes["run"] = 1 },
			want: map[string]string{"session run": "1 of 2 agui-proxies"}},
		{name: "stop not applied", breakIt: func(o *observation) {
			o.Sessions["stopped"] = apiSession{Phase: "Stopping"}
			o.Runners["stopped"] = []runnerProc{{PID: 7, Session: "stopped", Replica: "runner-manager-1"}}
		}, want: map[string]string{"session stopped": "runner still alive"}},
		{name: "delete not applied to the runner", breakIt: func(o *observation) {
			o.Runners["gone"] = []runnerProc{{PID: 8, Session: "gone", Replica: "runner-manager-0"}}
		}, want: map[string]string{"session gone": "deleted, runner still alive"}},
		{name: "delete not applied to Kubernetes", breakIt: func(o *observation) {
			o.Kube.CRs["kubegone"] = []crInfo{{Namespace: "chaos-kube-a", Name: "kubegone"}}
		}, want: map[string]string{"session kubegone": "AgenticSession chaos-kube-a/kubegone still exists"}},
		{name: "registry record left", breakIt: func(o *observation) { o.Owners["gone"] = registry.Endpoint{Owner: "runner-manager-0"} },
			want: map[string]string{"session gone": "left in KV"}},
		{name: "update not applied to the CR", breakIt: func(o *observation) { o.Kube.CRs["kube"][0].Gen = "1" },
			want: map[string]string{"session kube": "stale"}},
		{name: "no CR", breakIt: func(o *observation) { delete(o.Kube.CRs, "kube") },
			want: map[string]string{"session kube": "no AgenticSession"}},
		{name: "operator status not written back", breakIt: func(o *observation) { o.Kube.CRs["kube"][0].SDKSessionID = "chaos-op-2" },
			want: map[string]string{"session kube": `sdk_session_id "chaos-op-1", want "chaos-op-2"`}},
		{name: "CR recreated, uid not written back", breakIt: func(o *observation) { o.Kube.CRs["kube"][0].UID = "uid-new" },
			want: map[string]string{"session kube": `kube_cr_uid "uid-kube", want the AgenticSession's "uid-new"`}},
		{name: "no namespace written back", breakIt: func(o *observation) {
			a := o.Sessions["kube"]
			a.KubeNamespace = ""
			o.Sessions["kube"] = a
		}, want: map[string]string{"session kube": `kube_namespace "", want "chaos-kube-a"`}},
		{name: "a CR without operator status asks nothing of the session", breakIt: func(o *observation) {
			o.Kube.CRs["kube"][0].SDKSessionID = ""
		}, want: map[string]string{}},
		{name: "RoleBinding left over", breakIt: func(o *observation) {
			o.Kube.Bindings["chaos-kube-a"] = []Grant{{"chaos-g2", "ambient-project-view"}}
		}, want: map[string]string{"project chaos-kube-a": "RoleBindings [chaos-g2->ambient-project-view], want none"}},
		{name: "refused role bound", breakIt: func(o *observation) {
			o.Kube.Bindings["chaos-local-a"] = append(o.Kube.Bindings["chaos-local-a"], Grant{"chaos-escalate", refusedRole})
		}, want: map[string]string{"project chaos-local-a": "cluster-admin"}},
		{name: "no namespace", breakIt: func(o *observation) { delete(o.Kube.Namespaces, "chaos-kube-a") },
			want: map[string]string{"project chaos-kube-a": "no namespace"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := healthy(sessions, projects)
			tc.breakIt(&obs)
			wantObjectProblems(t, objectProblems(sessions, projects, obs), tc.want)
		})
	}
}

// TestMovedByOutage: a runner counts as moved when the session had one
// runner before the NATS outage and another (or none) after it, and the
// harness did not change the session from shortly before the outage on.
func TestMovedByOutage(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	rp := func(pid int, sid, replica string) []runnerProc {
		return []runnerProc{{PID: pid, Session: sid, Replica: replica}}
	}
	before := placement{At: t0, Runners: map[string][]runnerProc{
		"stays":   rp(1, "stays", "rm-0"),
		"moves":   rp(2, "moves", "rm-0"),
		"restart": rp(3, "restart", "rm-1"),
		"lost":    rp(4, "lost", "rm-1"),
		"stopped": rp(5, "stopped", "rm-0"),
		"early":   rp(6, "early", "rm-0"),
		"old":     rp(7, "old", "rm-0"),
		"claim":   rp(8, "claim", "rm-0"),
		"deleted": rp(9, "deleted", "rm-1"),
	}, Owners: map[string]registry.Endpoint{"claim": {Owner: "rm-0"}, "stays": {Owner: "rm-0"}}}
	after := placement{At: t0.Add(time.Minute), Owners: map[string]registry.Endpoint{"claim": {Owner: "rm-1"}, "stays": {Owner: "rm-0"}}, Runners: map[string][]runnerProc{
		"stays":   rp(1, "stays", "rm-0"),
		"moves":   rp(20, "moves", "rm-1"),
		"restart": rp(30, "restart", "rm-1"),
		"early":   rp(60, "early", "rm-1"),
		"old":     rp(70, "old", "rm-1"),
		"claim":   rp(8, "claim", "rm-0"),
	}}
	journal := []changeRecord{
		{At: t0.Add(20 * time.Second), Op: OpStop, Object: "stopped"},
		{At: t0.Add(-5 * time.Second), Op: OpUpdate, Object: "early"}, // inside the quiet time
		{At: t0.Add(-time.Minute), Op: OpUpdate, Object: "old"},       // long before: counts
		// Deleted long before, its runner outlived it (the delete was never
		// announced) and the resync stopped it after the outage: not moved.
		{At: t0.Add(-time.Minute), Op: OpDelete, Object: "deleted"},
	}
	m := movedByOutage(before, after, journal)
	if m.Considered != 6 || m.OtherReplica != 2 || m.SameReplica != 1 || m.None != 1 || m.ClaimOnly != 1 || m.Total() != 5 {
		t.Fatalf("moved = %+v, want 6 considered: 2 to the other replica, 1 restarted in place, 1 without a runner, 1 claim moved alone", m)
	}
	if got := movedByOutage(placement{}, after, nil); got.Considered != 0 || got.Total() != 0 {
		t.Fatalf("without a before-snapshot: %+v, want nothing", got)
	}
}

// TestTallyProblems: every object that exists must be counted, and every
// counted session that was deleted must have its delete counted; sessions
// that lived and died unseen are figures, not failures.
func TestTallyProblems(t *testing.T) {
	sessions := []session{
		{ID: "a", Project: localP}, {ID: "b", Project: localP, Deleted: true},
		{ID: "c", Project: kubeP, Deleted: true}, {ID: "d", Project: kubeP},
		{ID: "e", Project: kubeP, Deleted: true},
	}
	projects := []project{{ID: "p", Name: "p", SettingsID: "ps"}}
	obs := observation{}
	obs.Tally.Resources = map[string]tallyCounts{
		// e's delete counted twice (a new leader announcing it again) must
		// not stand in for b's missing one.
		tallySessions: {Deleted: 2, SeenIDs: []string{"a", "b", "e"}, DeletedIDs: []string{"e"}},
		tallyProjects: {SeenIDs: []string{"p"}},
	}
	f := tallyProblems(sessions, projects, obs)
	want := []string{"session b counted, deleted, its delete never counted", "session d never counted", "settings of p never counted"}
	if !slices.Equal(f.lines, want) || f.missing != 3 || f.unseenDeleted != 1 {
		t.Fatalf("tally findings %+v, want lines %q, 3 missing, 1 unseen", f, want)
	}
}

// TestChecks: the run-wide checks and the result line.
func TestChecks(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	exits := []exitRecord{
		{At: t0.Add(-time.Minute), Member: "runner-manager-0", Err: "exit status 1"},
		{At: t0.Add(time.Minute), Member: "informer-0", Planned: true},
	}
	if c := exitsCheck(exits, t0); !c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], "while starting") {
		t.Errorf("start-up exit: %+v, want passed with one note", c)
	}
	exits = append(exits, exitRecord{At: t0.Add(2 * time.Minute), Member: "kube-reconciler-1", Err: "exit status 2"})
	if c := exitsCheck(exits, t0); c.OK {
		t.Errorf("exit during the schedule passed: %+v", c)
	}
	if c := replicasCheck([]streamInfo{{Name: "AMBIENT_EVENTS", Replicas: 3}, {Name: "AMBIENT_DLQ", Replicas: 1}}, nil); c.OK || c.Failures[0] != "AMBIENT_DLQ: 1 replica(s)" {
		t.Errorf("R1 stream passed: %+v", c)
	}
	tests := []struct {
		took time.Duration
		ok   bool
	}{{2 * time.Second, true}, {45 * time.Second, false}, {-1, false}}
	for _, tc := range tests {
		c := oversizeCheck([]faultRecord{{Fault: Fault{Kind: FaultOversize}, Target: "big", Took: tc.took}})
		if c.OK != tc.ok {
			t.Errorf("oversize stop took %s: ok %t, want %t", tc.took, c.OK, tc.ok)
		}
	}
	journal := []changeRecord{{Result: resultOK}, {Result: resultRefused}, {Result: resultError, Op: OpCreate, Err: "unavailable"}}
	if c := journalCheck(journal, nil); c.OK || c.Detail != "1 made, 1 refused, 1 failed" {
		t.Errorf("journal check %+v", c)
	}
	kubeSessions := []session{{ID: "k", Project: kubeP, Running: true}, {ID: "gone", Project: kubeP, Deleted: true}}
	obs := healthy(kubeSessions, []project{{ID: kubeP.ID, Name: kubeP.Name}})
	written := operatorStats{Writes: 4, Failed: 1, Last: map[string]string{"k": "chaos-op-1", "gone": "chaos-op-2"}}
	if c := statusCheck(kubeSessions, obs, written, nil); !c.OK || c.Detail != "4 status writes on AgenticSessions, 1 failed, 0 skipped (no AgenticSession yet); 1 kube sessions carry one at the end, 0 lost it" {
		t.Errorf("status check %+v", c)
	}
	written.Last["k"] = "chaos-op-3"
	if c := statusCheck(kubeSessions, obs, written, nil); c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], `the operator last wrote "chaos-op-3"`) {
		t.Errorf("status check passed with the last write lost: %+v", c)
	}
	if c := statusCheck(kubeSessions, obs, operatorStats{Failed: 3}, nil); c.OK {
		t.Errorf("status check passed without a write: %+v", c)
	}
	// A kube-reconciler was killed: a write made while it was dead, in its
	// partitions, must have lived to the end.
	killed := []faultRecord{{Fault: Fault{Kind: FaultKill}, Target: "kube-reconciler-0"}}
	written.Last["k"] = "chaos-op-1"
	if c := statusCheck(kubeSessions, obs, written, killed); c.OK || !strings.Contains(c.Failures[0], "failover") {
		t.Errorf("status check passed with no write while a kube-reconciler was dead: %+v", c)
	}
	written.Down, written.DownDead = []string{"gone", "k"}, []string{"gone"}
	if c := statusCheck(kubeSessions, obs, written, killed); c.OK {
		t.Errorf("status check passed with the only session written in the dead replica's partitions deleted: %+v", c)
	}
	written.DownDead = []string{"gone", "k"}
	if c := statusCheck(kubeSessions, obs, written, killed); !c.OK || len(c.Failures) != 0 ||
		!strings.HasSuffix(c.Detail, "; 2 written while a kube-reconciler replica was dead, 2 of them in its partitions; 1 and 1 of those sessions kept at the end") {
		t.Errorf("status check %+v, want passed with one session kept", c)
	}
	written.Last["k"] = "chaos-op-kube-reconciler-0-down-1"
	if c := statusCheck(kubeSessions, obs, written, killed); c.OK || !strings.Contains(c.Failures[0], "chaos-op-kube-reconciler-0-down-1") {
		t.Errorf("status check passed with the write made while down lost: %+v", c)
	}
	// No kube session lay in the dead replica's partitions: one written
	// elsewhere while it was down passes, with a note.
	written.Last["k"] = "chaos-op-1"
	written.DownDead, written.DownMissed = nil, 1
	if c := statusCheck(kubeSessions, obs, written, killed); !c.OK || len(c.Failures) != 1 || !strings.HasPrefix(c.Failures[0], "note: ") {
		t.Errorf("status check %+v, want passed with a note", c)
	}
	if c := statusCheck(kubeSessions, obs, written, append(killed, faultRecord{Fault: Fault{Kind: FaultKill}, Target: "kube-reconciler-1"})); c.OK {
		t.Errorf("status check passed with one of two kills without a write in the dead replica's partitions: %+v", c)
	}
	// A takeover kill: the peer must have carried every write made in the
	// dead replica's partitions before the restart.
	written.DownDead, written.DownMissed = []string{"gone", "k"}, 0
	takeover := []faultRecord{{Fault: Fault{Kind: FaultKill, Takeover: true, Down: 12 * time.Second}, Target: "kube-reconciler-0", TakeoverWrites: 2, TakenOver: 2}}
	if c := statusCheck(kubeSessions, obs, written, takeover); !c.OK || len(c.Failures) != 0 ||
		!strings.HasSuffix(c.Detail, "; kube-reconciler-0 down 12s: its peer carried 2 of 2 writes in its partitions before the restart") {
		t.Errorf("status check %+v, want passed with the takeover", c)
	}
	takeover[0].TakenOver = 1
	if c := statusCheck(kubeSessions, obs, written, takeover); c.OK || !strings.Contains(c.Failures[0], "carried only 1 of the 2") {
		t.Errorf("status check passed with a write the peer did not carry: %+v", c)
	}
	takeover[0].TakeoverWrites, takeover[0].TakenOver = 0, 0
	if c := statusCheck(kubeSessions, obs, written, takeover); !c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], "takeover of the status write-back was not tested") {
		t.Errorf("status check %+v, want passed with a note", c)
	}
	if c := statusCheck(kubeSessions, obs, written, []faultRecord{{Fault: Fault{Kind: FaultKill}, Target: "informer-0"}}); strings.Contains(c.Detail, "dead") {
		t.Errorf("status check speaks of a dead kube-reconciler when none was killed: %+v", c)
	}
	obs.Kube.CRs["k"][0].SDKSessionID = ""
	if c := statusCheck(kubeSessions, obs, operatorStats{Writes: 4}, nil); c.OK {
		t.Errorf("status check passed with no session carrying a write: %+v", c)
	}
	r := auditResult{Lost: 3, Twice: 1, Moved: moved{OtherReplica: 2, None: 1}}
	if got, want := r.Line(1500*time.Millisecond), "lost=3 twice=1 moved_by_outage=3 converged_s=2"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	if got := r.Line(-1); !strings.HasSuffix(got, "converged_s=-1") {
		t.Errorf("not converged: %q", got)
	}
}

// TestAuditFailsOnEveryHeadlineFigure: a run passes only with lost, twice
// and moved_by_outage all zero and convergence in time.
func TestAuditFailsOnEveryHeadlineFigure(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	sessions := []session{{ID: "w", Project: localP, Running: true, Pinned: true}, {ID: "k", Project: kubeP, Running: true},
		{ID: "x", Project: localP, Pinned: true, RunnerKilled: true}}
	projects := []project{{ID: localP.ID, Name: localP.Name, Local: true, SettingsID: "set-l"}, {ID: kubeP.ID, Name: kubeP.Name, SettingsID: kubeP.SettingsID}}
	base := func() auditInput {
		obs := healthy(sessions, projects)
		obs.Tally.Resources = map[string]tallyCounts{tallySessions: {SeenIDs: []string{"w", "k", "x"}}, tallyProjects: {SeenIDs: []string{localP.ID, kubeP.ID}},
			tallySettings: {SeenIDs: []string{"set-l", kubeP.SettingsID}}}
		w := []runnerProc{{PID: 1, Session: "w", Replica: "runner-manager-0"}}
		return auditInput{
			Sessions: sessions, Projects: projects, Obs: obs, ScheduleStart: t0,
			Before:    placement{At: t0, Runners: map[string][]runnerProc{"w": w}},
			After:     placement{At: t0.Add(time.Minute), Runners: map[string][]runnerProc{"w": w}},
			Converged: 5 * time.Second, ConvergeBound: 30 * time.Second, Operator: operatorStats{Writes: 3},
			Faults: []faultRecord{
				{Fault: Fault{Kind: FaultFreeze, Down: 14 * time.Second}, Target: "informer-1", Moved: true},
				{Fault: Fault{Kind: FaultRunnerKill}, Target: "x", Took: time.Second},
				{Fault: Fault{Kind: FaultNodeFreeze, Down: 30 * time.Second}, Target: "runner-manager-1", Moved: true, Thawed: t0.Add(2 * time.Minute),
					Old: []oldRunner{{Session: "w", PID: 9, Owner: "runner-manager-0", Lived: 150 * time.Millisecond}}},
			},
			Events: []streamEvent{
				{Seq: 1, Key: "sessions/w", Type: "ADDED", Version: "001-a"},
				{Seq: 2, Key: "sessions/x", Type: "ADDED", Version: "001-b"},
				{Seq: 3, Key: "sessions/w", Type: "MODIFIED", Version: "002-c"},
			},
			Objects: objectsRead{Reads: 1, FirstSeq: 1,
				Events: []streamEvent{
					{Seq: 1, Key: "sessions/w", Type: "ADDED", Version: "001-a"},
					{Seq: 2, Key: "sessions/x", Type: "ADDED", Version: "001-b"},
					{Seq: 3, Key: "sessions/w", Type: "MODIFIED", Version: "002-c"},
				},
				Entries: []kvEntry{{Key: "sessions/w", Version: "002-c", EventSeq: 3}, {Key: "sessions/x", Version: "001-b", EventSeq: 2}},
			},
		}
	}
	if r := audit(base()); !r.Passed() {
		t.Fatalf("healthy run failed: %+v", r.Checks)
	}
	breaks := map[string]func(*auditInput){
		"lost":  func(in *auditInput) { delete(in.Obs.Runners, "w") },
		"twice": func(in *auditInput) { in.Sampler.Twice = []twiceRecord{{Session: "w"}} },
		"moved": func(in *auditInput) {
			in.After.Runners = map[string][]runnerProc{"w": {{PID: 2, Session: "w", Replica: "runner-manager-1"}}}
		},
		"converged":                    func(in *auditInput) { in.Converged = -1 },
		"too slow":                     func(in *auditInput) { in.Converged = 31 * time.Second },
		"no outage":                    func(in *auditInput) { in.After = placement{} },
		"uncounted":                    func(in *auditInput) { in.Obs.TallyErr = "connection refused" },
		"frozen leader kept its lease": func(in *auditInput) { in.Faults[0].Moved = false },
		"no freeze":                    func(in *auditInput) { in.Faults = in.Faults[1:2] },
		"killed runner's session never ended": func(in *auditInput) {
			in.Faults[1].Took = -1
		},
		"killed runner started again": func(in *auditInput) { in.Faults[1].Restarted = []int{7} },
		"killed runner's session Running": func(in *auditInput) {
			in.Obs.Sessions["x"] = apiSession{Phase: phaseRunning}
		},
		"killed runner still routed": func(in *auditInput) { in.Obs.Unrouted["x"] = 1 },
		"older event after a newer one": func(in *auditInput) {
			in.Events = append(in.Events, streamEvent{Seq: 4, Key: "sessions/w", Type: "MODIFIED", Version: "001-z"})
		},
		"events unreadable": func(in *auditInput) { in.Events, in.EventsErr = nil, errors.New("no stream") },
		"objects bucket holds an older state": func(in *auditInput) {
			in.Objects.Entries[0] = kvEntry{Key: "sessions/w", Version: "001-a", EventSeq: 1}
		},
		"objects bucket unreadable": func(in *auditInput) { in.Objects.Entries, in.Objects.Err = nil, errors.New("no bucket") },
		"frozen node kept a claim": func(in *auditInput) {
			in.Faults[2].Moved, in.Faults[2].StillClaimed = false, []string{"w"}
		},
		"old runner lived past the bound after the thaw": func(in *auditInput) { in.Faults[2].Old[0].Lived = thawBound + time.Millisecond },
		"old runner never ended after the thaw":          func(in *auditInput) { in.Faults[2].Old[0].Lived = -1 },
		"old runner beside the new one past the bound": func(in *auditInput) {
			thaw := in.Faults[2].Thawed
			in.Sampler.Twice = []twiceRecord{{Session: "w", First: thaw.Add(100 * time.Millisecond), Last: thaw.Add(thawBound + time.Second), Samples: 60,
				Runners: []runnerProc{{PID: 1, Session: "w", Replica: "runner-manager-0"}, {PID: 9, Session: "w", Replica: "runner-manager-1"}}}}
		},
	}
	for name, br := range breaks {
		in := base()
		br(&in)
		if r := audit(in); r.Passed() {
			t.Errorf("%s: the audit passed", name)
		}
	}
}

// TestJournalCheckAPIOutage: a change the API refused as unavailable is
// refused by the outage when made during an API outage (its margins
// included), a failure at any other time; resultOf tells gRPC Unavailable
// and REST 503 from other errors.
func TestJournalCheckAPIOutage(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	faults := []faultRecord{{Fault: Fault{Kind: FaultAPIOutage, Down: 30 * time.Second}, Start: t0, Restored: t0.Add(31 * time.Second)}}
	journal := []changeRecord{
		{At: t0.Add(-time.Second), Result: resultUnavailable}, // sent just before, answered during
		{At: t0.Add(10 * time.Second), Result: resultUnavailable},
		{At: t0.Add(32 * time.Second), Result: resultUnavailable}, // within the margin after
		{At: t0.Add(37 * time.Second), Result: resultUnavailable}, // the client still reconnecting (its backoff)
		{At: t0.Add(20 * time.Second), Result: resultOK},
		{At: t0.Add(40 * time.Second), Result: resultUnavailable, Op: OpUpdate, Object: "late"},
		{At: t0.Add(-time.Minute), Result: resultUnavailable, Op: OpCreate, Object: "early"},
	}
	c := journalCheck(journal, faults)
	if c.OK || c.Detail != "1 made, 0 refused, 2 failed, 4 refused by an API outage" {
		t.Errorf("journal check %+v", c)
	}
	if c := journalCheck(journal[:5], faults); !c.OK {
		t.Errorf("only changes refused during the outage: %+v", c)
	}
	// Without an API outage every unavailable answer is a failure.
	if c := journalCheck(journal[:5], nil); c.OK || c.Detail != "1 made, 0 refused, 4 failed" {
		t.Errorf("no outage: %+v", c)
	}

	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, resultOK},
		{fmt.Errorf("update session x: %w", status.Error(codes.Unavailable, "down")), resultUnavailable},
		{fmt.Errorf("POST /sessions/x/start: %w: 503", ErrUnavailable), resultUnavailable},
		{fmt.Errorf("POST /sessions/x/stop: %w", ErrRefused), resultRefused},
		{fmt.Errorf("create session: %w", status.Error(codes.Internal, "boom")), resultError},
	} {
		if got, _ := resultOf(tc.err); got != tc.want {
			t.Errorf("resultOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// TestKilledProblems: the session of a killed runner must end as
// runner-manager's README documents it (Failed, RunnerStarted False
// ProcessExited "killed by signal killed", completion_time), with no runner,
// no record in KV and a 404 from every agui-proxy; each departure is named.
func TestKilledProblems(t *testing.T) {
	x := session{ID: "x", Project: localP, Pinned: true, RunnerKilled: true}
	tests := []struct {
		name    string
		breakIt func(o *observation)
		want    string // a phrase of the problem; "" for none
	}{
		{"as documented", func(*observation) {}, ""},
		{"restarted instead", func(o *observation) {
			o.Sessions["x"] = apiSession{Phase: phaseRunning, Completed: true, Conditions: killedConditions}
		}, `phase "Running", want "Failed"`},
		{"completed", func(o *observation) {
			o.Sessions["x"] = apiSession{Phase: phaseCompleted, Completed: true, Conditions: killedConditions}
		}, `phase "Completed"`},
		{"another reason", func(o *observation) {
			o.Sessions["x"] = apiSession{Phase: phaseFailed, Completed: true,
				Conditions: `[{"type":"RunnerStarted","status":"False","reason":"RunnerLost","message":"RunnerLost: gone"}]`}
		}, "RunnerStarted False RunnerLost"},
		{"exit code instead of the signal", func(o *observation) {
			o.Sessions["x"] = apiSession{Phase: phaseFailed, Completed: true,
				Conditions: `[{"type":"RunnerStarted","status":"False","reason":"ProcessExited","message":"ProcessExited: exit code -1"}]`}
		}, `want False ProcessExited "ProcessExited: killed by signal killed"`},
		{"no conditions", func(o *observation) { o.Sessions["x"] = apiSession{Phase: phaseFailed, Completed: true} }, "RunnerStarted none"},
		{"no completion time", func(o *observation) {
			o.Sessions["x"] = apiSession{Phase: phaseFailed, Conditions: killedConditions}
		}, "no completion_time"},
		{"a runner again", func(o *observation) {
			o.Runners["x"] = []runnerProc{{PID: 9, Session: "x", Replica: "runner-manager-1"}}
		}, "runner started again"},
		{"record left", func(o *observation) { o.Owners["x"] = registry.Endpoint{SessionID: "x", Owner: "runner-manager-0"} }, "record of runner-manager-0 left in KV"},
		{"still routed", func(o *observation) { o.Unrouted["x"] = 0 }, "0 of 2 agui-proxies answer 404"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := healthy([]session{x}, nil)
			tc.breakIt(&obs)
			got := strings.Join(sessionProblems(x, obs), "; ")
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("problems %q, want %q", got, tc.want)
			}
		})
	}
}

// TestEventOrderProblems: per object, an older state after a newer one, the
// same state and type twice, and anything after a DELETED are found, named
// with the fault before them; a MODIFIED and the DELETED of the same
// state, other objects interleaved, and two states of one instant pass.
func TestEventOrderProblems(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	faults := []faultRecord{{Fault: Fault{Kind: FaultFreeze}, Target: "informer-0", Start: t0.Add(10 * time.Second)}}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ok := []streamEvent{
		{Seq: 1, At: at(1), Key: "sessions/a", Type: "ADDED", Version: "0000000000000100-h1"},
		{Seq: 2, At: at(2), Key: "sessions/b", Type: "ADDED", Version: "0000000000000050-h2"},
		{Seq: 3, At: at(3), Key: "sessions/a", Type: "MODIFIED", Version: "0000000000000200-h3"},
		{Seq: 4, At: at(4), Key: "sessions/a", Type: "MODIFIED", Version: "0000000000000200-h4"},
		{Seq: 5, At: at(5), Key: "projects/a", Type: "ADDED", Version: "0000000000000001-h5"},
		{Seq: 6, At: at(6), Key: "sessions/a", Type: "DELETED", Version: "0000000000000200-h4"},
	}
	if got := eventOrderProblems(ok, faults, t0); len(got) != 0 {
		t.Fatalf("a stream in order: %q", got)
	}
	// A dead letter replayed for one group repeats an older event of b:
	// no state goes back, and b's next change follows its last real one.
	replays := append(slices.Clone(ok),
		streamEvent{Seq: 7, At: at(7), Key: "sessions/b", Type: "ADDED", Version: "0000000000000050-h2", Replayed: true},
		streamEvent{Seq: 8, At: at(8), Key: "sessions/b", Type: "MODIFIED", Version: "0000000000000060-h8"},
		streamEvent{Seq: 9, At: at(9), Key: "sessions/b", Type: "MODIFIED", Version: "0000000000000060-h8", Replayed: true})
	if got := eventOrderProblems(replays, faults, t0); len(got) != 0 {
		t.Fatalf("replayed dead letters counted as events: %q", got)
	}
	tests := []struct {
		name string
		add  streamEvent
		want string
	}{
		{"older state", streamEvent{Seq: 7, At: at(12), Key: "sessions/b", Type: "MODIFIED", Version: "0000000000000049-h9"},
			"sessions/b: MODIFIED 0000000000000049-h9 (seq 7, t=12.0s) an older state after a newer one: ADDED 0000000000000050-h2 (seq 2, t=2.0s), after fault 1 (process frozen informer-0)"},
		{"twice", streamEvent{Seq: 7, At: at(3), Key: "sessions/b", Type: "ADDED", Version: "0000000000000050-h2"}, "published twice"},
		{"after the delete", streamEvent{Seq: 7, At: at(12), Key: "sessions/a", Type: "MODIFIED", Version: "0000000000000300-h7"}, "after its DELETED"},
		{"undecodable", streamEvent{Seq: 7, At: at(12), Type: "undecodable"}, "seq 7 at t=12.0s: not a ResourceEvent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := eventOrderProblems(append(slices.Clone(ok), tc.add), faults, t0)
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Errorf("problems %q, want one naming %q", got, tc.want)
			}
		})
	}
}

// TestFreezeCheck: a freeze passes only when the frozen member's lease or
// partitions had moved before its thaw and it resumed without an error; a
// node freeze also when every claim of its replica had moved.
func TestFreezeCheck(t *testing.T) {
	moved := faultRecord{Fault: Fault{Kind: FaultFreeze, Down: 14 * time.Second}, Target: "runner-manager-1", Moved: true}
	if c := freezeCheck([]faultRecord{moved}); !c.OK {
		t.Errorf("a freeze that moved the partitions: %+v", c)
	}
	kept := moved
	kept.Moved, kept.Note = false, "it still owned partitions [1 2] of group runner-manager before the thaw"
	if c := freezeCheck([]faultRecord{moved, kept}); c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], "still owned partitions") {
		t.Errorf("a freeze that moved nothing passed: %+v", c)
	}
	failed := moved
	failed.Err = "runner-manager-1 not ready after the thaw"
	if c := freezeCheck([]faultRecord{failed}); c.OK {
		t.Errorf("a freeze that failed passed: %+v", c)
	}
	node := nodeFrozen(time.Date(2026, 12, 1, 12, 10, 0, 0, time.UTC))
	if c := freezeCheck([]faultRecord{moved, node}); !c.OK || c.Detail != "2 freezes, 0 failed" {
		t.Errorf("a node freeze that moved partitions and claims: %+v", c)
	}
	node.Moved, node.StillClaimed = false, []string{"a"}
	if c := freezeCheck([]faultRecord{moved, node}); c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], "node freeze of runner-manager-1 for 30s: its claims of a not taken over") {
		t.Errorf("a node freeze whose claim stayed passed: %+v", c)
	}
}

// nodeFrozen is a node freeze of runner-manager-1 thawed at thaw that moved
// sessions a (old runner pid 11) and b (pid 12) to runner-manager-0.
func nodeFrozen(thaw time.Time) faultRecord {
	return faultRecord{Fault: Fault{Kind: FaultNodeFreeze, Down: 30 * time.Second}, Target: "runner-manager-1", Start: thaw.Add(-30 * time.Second), Thawed: thaw, Moved: true,
		Frozen: []frozenRunner{{runnerProc: runnerProc{PID: 11, Session: "a", Replica: "runner-manager-1"}}, {runnerProc: runnerProc{PID: 12, Session: "b", Replica: "runner-manager-1"}}},
		Old: []oldRunner{
			{Session: "a", PID: 11, Owner: "runner-manager-0", Phase: phaseRunning, Conditions: spawned(21), Lived: 120 * time.Millisecond},
			{Session: "b", PID: 12, Owner: "runner-manager-0", Phase: phaseRunning, Conditions: spawned(12), Lived: 80 * time.Millisecond},
		}}
}

// spawned are a session's conditions with runner pid's ProcessSpawned (as
// runner-manager writes it) and RunnerStarted status.
func spawned(pid int, status ...string) string {
	st := "True"
	if len(status) > 0 {
		st = status[0]
	}
	return fmt.Sprintf(`[{"type":"ProcessSpawned","status":"True","reason":"Spawned","message":"pid %d, port 4100"},{"type":"RunnerStarted","status":%q,"reason":"Restarted"}]`, pid, st)
}

// TestThawWindow: after a node freeze's thaw, a moved session's old runner
// beside one new runner on another replica, within thawBound of the thaw,
// is the thaw window's, reported apart and not twice. Everything else is
// twice: the same pair before the thaw (the old runner escaped the
// freeze) or past the bound, a third runner, a new runner on the frozen
// replica, a session the freeze did not move, and any run without a node
// freeze.
func TestThawWindow(t *testing.T) {
	thaw := time.Date(2026, 12, 1, 12, 10, 0, 0, time.UTC)
	rp := func(pid int, sid, replica string) runnerProc {
		return runnerProc{PID: pid, Session: sid, Replica: replica}
	}
	ep := func(sid string, from, to time.Duration, rs ...runnerProc) twiceRecord {
		return twiceRecord{Session: sid, First: thaw.Add(from), Last: thaw.Add(to), Samples: int((to-from)/(100*time.Millisecond)) + 1, Runners: rs}
	}
	freeze := nodeFrozen(thaw)
	freeze.Old = append(freeze.Old, oldRunner{Session: "d", PID: 14, Lived: time.Second})
	inWindow := []twiceRecord{
		ep("a", 50*time.Millisecond, 250*time.Millisecond, rp(11, "a", "runner-manager-1"), rp(21, "a", "runner-manager-0")),
		// A sample begun just before the SIGCONTs read the runner after them.
		ep("b", -20*time.Millisecond, 100*time.Millisecond, rp(12, "b", "runner-manager-1"), rp(22, "b", "runner-manager-0")),
	}
	twice := []twiceRecord{
		ep("b", -10*time.Second, -9*time.Second, rp(12, "b", "runner-manager-1"), rp(22, "b", "runner-manager-0")),
		ep("a", 4*time.Second, thawBound+time.Second, rp(11, "a", "runner-manager-1"), rp(21, "a", "runner-manager-0")),
		ep("a", 300*time.Millisecond, 400*time.Millisecond, rp(11, "a", "runner-manager-1"), rp(21, "a", "runner-manager-0"), rp(23, "a", "runner-manager-0")),
		ep("d", 100*time.Millisecond, 200*time.Millisecond, rp(14, "d", "runner-manager-1"), rp(24, "d", "runner-manager-1")),
		ep("c", 100*time.Millisecond, 200*time.Millisecond, rp(13, "c", "runner-manager-1"), rp(23, "c", "runner-manager-0")),
	}
	all := append(slices.Clone(inWindow), twice...)
	gotTwice, gotWindow := thawWindow(all, []faultRecord{freeze})
	if !slices.EqualFunc(gotWindow, inWindow, sameEpisode) || !slices.EqualFunc(gotTwice, twice, sameEpisode) {
		t.Fatalf("thaw window %+v,\ntwice %+v;\nwant window %+v,\ntwice %+v", gotWindow, gotTwice, inWindow, twice)
	}
	if gotTwice, gotWindow := thawWindow(inWindow, nil); len(gotWindow) != 0 || len(gotTwice) != 2 {
		t.Errorf("without a node freeze: window %+v, twice %+v; want all twice", gotWindow, gotTwice)
	}

	// In the audit: the thaw window is no session twice, and it is named.
	in := auditInput{Sampler: samplerStats{Samples: 100, Twice: inWindow}, Faults: []faultRecord{freeze}}
	r := audit(in)
	c := checkNamed(t, r, "no session had two live runners")
	if r.Twice != 0 || !c.OK || len(r.ThawWindow) != 2 || !strings.Contains(c.Detail, "not counted: 2 sessions with their old runner, thawed, beside the new one") {
		t.Errorf("twice %d, thaw window %d, check %+v; want no session twice, 2 episodes in the thaw window named in the detail", r.Twice, len(r.ThawWindow), c)
	}
	in.Sampler.Twice = all
	if r := audit(in); r.Twice != 4 || len(r.TwiceRecords) != 4 {
		t.Errorf("twice %d (%+v), want the 4 sessions of the other episodes", r.Twice, r.TwiceRecords)
	}
}

func sameEpisode(a, b twiceRecord) bool {
	return a.Session == b.Session && a.First.Equal(b.First) && a.Last.Equal(b.Last) && slices.Equal(a.Runners, b.Runners)
}

func checkNamed(t *testing.T, r auditResult, prefix string) check {
	t.Helper()
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", prefix, r.Checks)
	return check{}
}

// TestNodeFreezeCheck: after a node freeze, the old runner of every
// session taken over must be gone within thawBound of the thaw and not
// alive at the end, and no change of such a session announced after the
// thaw may name its old runner or end it, unless the harness stopped,
// started or deleted it meanwhile; a node freeze that moved nothing, or
// whose changes could not be watched, fails; a run without one passes.
func TestNodeFreezeCheck(t *testing.T) {
	thaw := time.Date(2026, 12, 1, 12, 10, 0, 0, time.UTC)
	after := func(sid string, d time.Duration, phase, conds string) sessionChange {
		return sessionChange{Session: sid, At: thaw.Add(d), Phase: phase, Conditions: conds}
	}
	obs := observation{Runners: map[string][]runnerProc{"a": {{PID: 21, Session: "a", Replica: "runner-manager-0"}}}}
	if c := nodeFreezeCheck(nil, nil, nil, obs); !c.OK || c.Detail != "no node freeze ran" {
		t.Errorf("no node freeze: %+v", c)
	}
	tests := []struct {
		name    string
		change  func(f *faultRecord, obs *observation, journal *[]changeRecord)
		wantErr string // a phrase of the failure; "" passes
	}{
		{"as documented", func(f *faultRecord, _ *observation, _ *[]changeRecord) {
			// b's peer restart is announced after the thaw: Creating, then
			// Running, naming its new runner; a label update changes neither.
			f.AfterThaw = []sessionChange{
				after("b", 30*time.Millisecond, "Creating", spawned(22, "Unknown")),
				after("b", 900*time.Millisecond, phaseRunning, spawned(22)),
				after("a", 2*time.Second, phaseRunning, spawned(21)),
			}
		}, ""},
		{"old runner past the bound", func(f *faultRecord, _ *observation, _ *[]changeRecord) { f.Old[1].Lived = 6 * time.Second },
			"session b: its old runner pid 12 lived 6s after the thaw, past 5s"},
		{"old runner never ended", func(f *faultRecord, _ *observation, _ *[]changeRecord) { f.Old[0].Lived = -1 },
			"session a: its old runner pid 11 still alive 10s after the thaw"},
		{"old runner alive at the end", func(_ *faultRecord, o *observation, _ *[]changeRecord) {
			o.Runners["a"] = append(o.Runners["a"], runnerProc{PID: 11, Session: "a", Replica: "runner-manager-1"})
		}, "session a: its old runner pid 11 still alive at the end"},
		{"the thawed replica's write", func(f *faultRecord, _ *observation, _ *[]changeRecord) {
			f.AfterThaw = []sessionChange{after("a", 40*time.Millisecond, phaseRunning, spawned(11))}
		}, `session a: a status write naming the old runner (ProcessSpawned "pid 11, port 4100") announced 40ms after the thaw`},
		{"the old runner's end", func(f *faultRecord, _ *observation, _ *[]changeRecord) {
			f.AfterThaw = []sessionChange{after("a", 60*time.Millisecond, phaseFailed, spawned(21, "False"))}
		}, "session a: a runner's end announced 60ms after the thaw"},
		{"an end the harness asked for", func(f *faultRecord, _ *observation, j *[]changeRecord) {
			f.AfterThaw = []sessionChange{after("a", time.Second, phaseStopped, spawned(21, "False"))}
			*j = append(*j, changeRecord{At: thaw.Add(500 * time.Millisecond), Op: OpStop, Object: "a"})
		}, ""},
		{"nothing moved", func(f *faultRecord, _ *observation, _ *[]changeRecord) { f.Old = nil }, "no session was taken over before the thaw"},
		{"watch lost", func(f *faultRecord, _ *observation, _ *[]changeRecord) { f.WatchErr = "EOF" }, "not watched to the end: EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := nodeFrozen(thaw)
			o := observation{Runners: maps.Clone(obs.Runners)}
			var journal []changeRecord
			tc.change(&f, &o, &journal)
			window := []twiceRecord{{Session: "a", First: thaw.Add(50 * time.Millisecond), Last: thaw.Add(100 * time.Millisecond), Samples: 2}}
			c := nodeFreezeCheck([]faultRecord{f}, journal, window, o)
			if tc.wantErr == "" {
				if !c.OK || !strings.Contains(c.Detail, "2 sessions taken over, their old runners gone at most 120ms after the thaw; 1 sessions in the thaw window") {
					t.Errorf("check %+v, want passed with the figures", c)
				}
				return
			}
			if c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], tc.wantErr) {
				t.Errorf("check %+v, want one failure naming %q", c, tc.wantErr)
			}
		})
	}
}

// TestCompareObjects: per object, the objects bucket holds the state and
// event_seq of the object's last event, and nothing after its DELETED; a
// replayed dead letter is no last event, a reference event and events that
// aged out of the stream exempt their object.
func TestCompareObjects(t *testing.T) {
	const (
		v1 = "0000000000000100-aaaaaaaaaaaaaaaa"
		v2 = "0000000000000200-bbbbbbbbbbbbbbbb"
		v3 = "0000000000000300-cccccccccccccccc"
	)
	stream := []streamEvent{
		{Seq: 1, Key: "sessions/a", Type: "ADDED", Version: v1},
		{Seq: 2, Key: "sessions/b", Type: "ADDED", Version: v1},
		{Seq: 3, Key: "sessions/a", Type: "MODIFIED", Version: v2},
		{Seq: 4, Key: "projects/p", Type: "ADDED", Version: v1},
		{Seq: 5, Key: "sessions/b", Type: "DELETED", Version: v1},
		{Seq: 6, Type: "undecodable"},
	}
	agree := []kvEntry{
		{Key: "sessions/a", Version: v2, EventSeq: 3, Revision: 10},
		{Key: "projects/p", Version: v1, EventSeq: 4, Revision: 11},
	}
	with := func(extra ...streamEvent) []streamEvent { return append(slices.Clone(stream), extra...) }
	entries := func(change func([]kvEntry) []kvEntry) []kvEntry { return change(slices.Clone(agree)) }
	tests := []struct {
		name    string
		evs     []streamEvent
		first   uint64
		entries []kvEntry
		// live, deleted, ref, agedOut, replays
		counts [5]int
		want   string // the one mismatch, "" for none
	}{
		{name: "matching", evs: stream, first: 1, entries: agree, counts: [5]int{2, 1, 0, 0, 0}},
		{name: "stale older version", evs: stream, first: 1,
			entries: entries(func(es []kvEntry) []kvEntry { es[0].Version, es[0].EventSeq = v1, 1; return es }),
			counts:  [5]int{1, 1, 0, 0, 0},
			want:    "sessions/a: last event MODIFIED " + v2 + " (seq 3), KV holds an older state " + v1 + " (event_seq 1, revision 10)"},
		{name: "newer state than the last event", evs: stream, first: 1,
			entries: entries(func(es []kvEntry) []kvEntry { es[0].Version, es[0].EventSeq = v3, 9; return es }),
			counts:  [5]int{1, 1, 0, 0, 0}, want: "KV holds a newer state " + v3},
		{name: "same state, other event_seq", evs: stream, first: 1,
			entries: entries(func(es []kvEntry) []kvEntry { es[0].EventSeq = 1; return es }),
			counts:  [5]int{1, 1, 0, 0, 0}, want: "sessions/a: last event MODIFIED " + v2 + " (seq 3), KV holds that state " + v2 + " (event_seq 1, revision 10)"},
		{name: "deleted object with an entry left", evs: stream, first: 1,
			entries: entries(func(es []kvEntry) []kvEntry {
				return append(es, kvEntry{Key: "sessions/b", Version: v1, EventSeq: 2, Revision: 12})
			}),
			counts: [5]int{2, 0, 0, 0, 0}, want: "sessions/b: deleted (seq 5), KV still holds " + v1 + " (event_seq 2, revision 12)"},
		{name: "live object without an entry", evs: stream, first: 1, entries: agree[1:],
			counts: [5]int{1, 1, 0, 0, 0}, want: "sessions/a: last event MODIFIED " + v2 + " (seq 3), no entry in KV"},
		{name: "reference event exempt with the last state that fitted", first: 1,
			evs:     with(streamEvent{Seq: 7, Key: "sessions/a", Type: "MODIFIED", Version: v3, Ref: true}),
			entries: agree, counts: [5]int{1, 1, 1, 0, 0}},
		{name: "reference event exempt without an entry", first: 1,
			evs:     with(streamEvent{Seq: 7, Key: "sessions/big", Type: "ADDED", Version: v3, Ref: true}),
			entries: agree, counts: [5]int{2, 1, 1, 0, 0}},
		{name: "replayed dead letter ignored", first: 1,
			evs:     with(streamEvent{Seq: 7, Key: "sessions/a", Type: "ADDED", Version: v1, Replayed: true}),
			entries: agree, counts: [5]int{2, 1, 0, 0, 1}},
		{name: "replayed dead letter of a deleted object brings nothing back", first: 1,
			evs:     with(streamEvent{Seq: 7, Key: "sessions/b", Type: "MODIFIED", Version: v1, Replayed: true}),
			entries: agree, counts: [5]int{2, 1, 0, 0, 1}},
		{name: "entry without an event while nothing aged out", evs: stream, first: 1,
			entries: entries(func(es []kvEntry) []kvEntry {
				return append(es, kvEntry{Key: "sessions/z", Version: v1, EventSeq: 0, Revision: 3})
			}),
			counts: [5]int{2, 1, 0, 0, 0}, want: "sessions/z: no event in the stream (first sequence 1), KV holds " + v1 + " (event_seq 0, revision 3)"},
		{name: "entry whose events aged out", evs: stream[2:], first: 3,
			entries: entries(func(es []kvEntry) []kvEntry {
				return append(es, kvEntry{Key: "sessions/old", Version: v1, EventSeq: 2, Revision: 3})
			}),
			counts: [5]int{2, 1, 0, 1, 0}},
		{name: "entry newer than the stream's first sequence without an event", evs: stream[2:], first: 3,
			entries: entries(func(es []kvEntry) []kvEntry {
				return append(es, kvEntry{Key: "sessions/old", Version: v1, EventSeq: 4, Revision: 3})
			}),
			counts: [5]int{2, 1, 0, 0, 0}, want: "sessions/old: no event in the stream (first sequence 3)"},
		{name: "entry that is no object's", evs: stream, first: 1,
			entries: entries(func(es []kvEntry) []kvEntry {
				return append(es, kvEntry{Key: "junk", Revision: 4, Err: "not an object key"})
			}),
			counts: [5]int{2, 1, 0, 0, 0}, want: "key junk (revision 4): not an object key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := compareObjects(tc.evs, tc.first, tc.entries)
			if got := [5]int{f.Live, f.Deleted, f.Ref, f.AgedOut, f.Replays}; got != tc.counts {
				t.Errorf("live, deleted, ref, aged out, replays %v, want %v", got, tc.counts)
			}
			switch {
			case tc.want == "" && len(f.Mismatches) > 0:
				t.Errorf("mismatches %q, want none", f.Mismatches)
			case tc.want != "" && (len(f.Mismatches) != 1 || !strings.Contains(f.Mismatches[0], tc.want)):
				t.Errorf("mismatches %q, want one naming %q", f.Mismatches, tc.want)
			}
		})
	}
}

// TestObjectsCheck: the check passes with objects compared and none
// disagreeing; it names the first mismatches in its detail, and fails when
// a read failed or nothing was compared.
func TestObjectsCheck(t *testing.T) {
	evs := []streamEvent{{Seq: 1, Key: "sessions/a", Type: "ADDED", Version: "001-a"}, {Seq: 2, Key: "sessions/big", Type: "ADDED", Version: "001-b", Ref: true}}
	rd := objectsRead{Events: evs, FirstSeq: 1, Entries: []kvEntry{{Key: "sessions/a", Version: "001-a", EventSeq: 1}}, Reads: 3, Waited: 2 * time.Second}
	c := objectsCheck(rd)
	if !c.OK || len(c.Failures) != 0 || c.Detail != "1 objects compared: 1 entries are their last event's state, 0 deleted objects have none; exempt: 1 whose last event is a reference event (over the payload limit), 0 aged out of the stream; 0 replayed dead letters skipped; 0 mismatches; agreed at read 3, 2s after the first" {
		t.Errorf("agreeing bucket: %+v", c)
	}
	stale := rd
	stale.Entries = nil
	for _, id := range []string{"a", "b", "c", "d"} {
		stale.Events = append(stale.Events, streamEvent{Seq: uint64(len(stale.Events) + 1), Key: "sessions/" + id, Type: "MODIFIED", Version: "002-" + id})
	}
	c = objectsCheck(stale)
	if c.OK || len(c.Failures) != 4 || !strings.Contains(c.Detail, "; 4 mismatches (sessions/a: last event MODIFIED 002-a (seq 3), no entry in KV; sessions/b: ") ||
		!strings.Contains(c.Detail, "; 1 more); still so after 3 reads over 2s") {
		t.Errorf("bucket without entries: %+v", c)
	}
	broken := rd
	broken.Err = errors.New("no bucket")
	if c := objectsCheck(broken); c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], "no bucket") || !strings.HasPrefix(c.Detail, "not compared:") {
		t.Errorf("unreadable bucket: %+v; want one failure naming the read, nothing compared", c)
	}
	// The stream unreadable: no object is reported wrong for it.
	halfRead := stale
	halfRead.Events, halfRead.Err = nil, errors.New("fetch from AMBIENT_EVENTS: nats: no responders available for request")
	if c := objectsCheck(halfRead); c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], "no responders") {
		t.Errorf("unreadable stream: %+v; want one failure naming the read", c)
	}
	if c := objectsCheck(objectsRead{Events: evs[1:], FirstSeq: 1}); c.OK || c.Failures[0] != "no object compared" {
		t.Errorf("nothing compared passed: %+v", c)
	}
}

// overLimitRun is a good over-limit fault: local session "lo" created at
// t0 and made smaller 2 minutes later, kube session "ko" kept over the
// limit, with the events stream such a run leaves (a reference ADDED of
// each, a reference MODIFIED of each for the informer's condition write,
// then lo's complete MODIFIED after the shrink).
func overLimitRun(t0 time.Time) (faultRecord, []streamEvent) {
	shrunk := t0.Add(2 * time.Minute)
	f := faultRecord{Fault: Fault{Kind: FaultOverLimit, Down: 2 * time.Minute, Beside: true}, Target: "lo", Down0: t0, Restored: shrunk,
		OverLimit: &overLimitRecord{Kept: "ko", Flagged: 400 * time.Millisecond, KeptFlagged: 500 * time.Millisecond, Leaders: []string{"informer-0", "informer-1"},
			Cleared: 600 * time.Millisecond, Converged: time.Second, Watched: true}}
	evs := []streamEvent{
		{Seq: 10, At: t0, Key: "sessions/lo", Type: "ADDED", Version: "v1", Ref: true},
		{Seq: 11, At: t0, Key: "sessions/ko", Type: "ADDED", Version: "v1", Ref: true},
		{Seq: 12, At: t0.Add(time.Second), Key: "sessions/lo", Type: "MODIFIED", Version: "v2", Ref: true},
		{Seq: 13, At: t0.Add(time.Second), Key: "sessions/ko", Type: "MODIFIED", Version: "v2", Ref: true},
		{Seq: 90, At: shrunk.Add(200 * time.Millisecond), Key: "sessions/lo", Type: "MODIFIED", Version: "v3"},
	}
	return f, evs
}

// TestOverLimitCheck: the sessions over the payload limit pass only when
// both were flagged in time, neither got an AgenticSession, a runner or a
// runner record while over the limit, the shrunk one lost the condition and
// converged in time, and the events stream holds reference events of
// them only, until the local one's first complete event, a MODIFIED after
// the shrink. No leader change is a figure, not a failure; a run without
// the fault passes.
func TestOverLimitCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		breakIt func(f *faultRecord, evs []streamEvent) []streamEvent
		want    string // a phrase of the one failure; "" passes
	}{
		{name: "good", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent { return evs }},
		{name: "no leader change: a figure only", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent {
			f.OverLimit.Leaders = []string{"informer-0"}
			return evs
		}},
		{name: "fault failed", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent { f.Err = "create session: too big"; return evs },
			want: "the fault failed: create session: too big"},
		{name: "not watched to the end", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent { f.OverLimit.Watched = false; return evs },
			want: "not watched to the end"},
		{name: "local never flagged", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent { f.OverLimit.Flagged = -1; return evs },
			want: "the local session lo flagged never after its create"},
		{name: "kube flagged late", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent {
			f.OverLimit.KeptFlagged = 31 * time.Second
			return evs
		}, want: "the kube session ko flagged 31s after its create, want within 30s"},
		{name: "AgenticSession while over the limit", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent {
			f.OverLimit.CRs = []string{"AgenticSession chaos-kube-a/ko of session ko"}
			return evs
		}, want: "over the payload limit: AgenticSession chaos-kube-a/ko"},
		{name: "kube session ran", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent {
			f.OverLimit.Runners = []string{"KV ambient-runners record of the kube session, owner runner-manager-1"}
			return evs
		}, want: "over the payload limit: KV ambient-runners record of the kube session, owner runner-manager-1"},
		{name: "local session ran while over the limit", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent {
			f.OverLimit.Runners = []string{"runner pid 42 of the local session on runner-manager-0"}
			return evs
		}, want: "over the payload limit: runner pid 42 of the local session on runner-manager-0"},
		{name: "condition kept after the shrink", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent { f.OverLimit.Cleared = -1; return evs },
			want: "condition gone never after"},
		{name: "not converged in time", breakIt: func(f *faultRecord, evs []streamEvent) []streamEvent {
			f.OverLimit.Converged = 45 * time.Second
			return evs
		}, want: "Running with one runner 45s after, want within 30s"},
		{name: "first event complete", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent { evs[0].Ref = false; return evs },
			want: "sessions/lo ADDED v1 (seq 10): its first event, want a reference ADDED"},
		{name: "complete event of the kept session", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent {
			return append(evs, streamEvent{Seq: 91, At: t0.Add(3 * time.Minute), Key: "sessions/ko", Type: "MODIFIED", Version: "v9"})
		}, want: "sessions/ko MODIFIED v9 (seq 91): a complete event of the session kept over the limit"},
		{name: "complete event before the shrink", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent { evs[2].Ref = false; return evs },
			want: "sessions/lo MODIFIED v2 (seq 12): a complete event before the session was made smaller"},
		{name: "ADDED again after the shrink", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent { evs[4].Type = "ADDED"; return evs },
			want: "sessions/lo ADDED v3 (seq 90): an ADDED after its first event"},
		{name: "nothing complete after the shrink", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent { return evs[:4] },
			want: "sessions/lo: no complete event after it was made smaller"},
		{name: "replayed dead letter is no event", breakIt: func(_ *faultRecord, evs []streamEvent) []streamEvent {
			return append(evs, streamEvent{Seq: 95, At: t0.Add(3 * time.Minute), Key: "sessions/lo", Type: "ADDED", Version: "v1", Replayed: true})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, evs := overLimitRun(t0)
			evs = tc.breakIt(&f, evs)
			c := overLimitCheck([]faultRecord{{Fault: Fault{Kind: FaultOversize}}, f}, evs, nil, 30*time.Second)
			if tc.want == "" {
				if !c.OK || len(c.Failures) != 0 {
					t.Fatalf("check failed: %+v", c)
				}
				return
			}
			if c.OK || len(c.Failures) != 1 || !strings.Contains(c.Failures[0], tc.want) {
				t.Fatalf("check %+v, want one failure naming %q", c, tc.want)
			}
		})
	}
	f, evs := overLimitRun(t0)
	if c := overLimitCheck([]faultRecord{f}, evs, errors.New("stream gone"), 30*time.Second); c.OK || !strings.Contains(c.Failures[0], "stream gone") {
		t.Errorf("check passed with the events stream unread: %+v", c)
	}
	if c := overLimitCheck([]faultRecord{{Fault: Fault{Kind: FaultOversize}}}, nil, nil, 30*time.Second); !c.OK || c.Detail != "no over-limit fault ran" {
		t.Errorf("a run without the fault: %+v", c)
	}
	if c := overLimitCheck([]faultRecord{f}, evs, nil, 30*time.Second); !strings.Contains(c.Detail, "informer lease holders while over the limit: informer-0 -> informer-1") ||
		!strings.Contains(c.Detail, "no runner or runner record of either while over the limit") {
		t.Errorf("detail %q, want the leaders and the runners' absence", c.Detail)
	}
}

// TestOverLimitProblems: a session left over the payload limit is in its
// desired state with the informer's condition and, for a kube one, no
// AgenticSession, runner or runner record; it is never counted by
// event-tally. A session under the limit must not carry the condition.
func TestOverLimitProblems(t *testing.T) {
	const flagged = `[{"type":"EventsPublished","status":"False","reason":"ObjectTooLarge","message":"too large"}]`
	sessions := []session{{ID: "ko", Project: kubeP, Running: true, Pinned: true, OverLimit: true}, {ID: "run", Project: localP, Running: true}}
	projects := []project{{ID: localP.ID, Name: localP.Name, Local: true}, {ID: kubeP.ID, Name: kubeP.Name}}
	healthyOver := func() observation {
		obs := healthy(sessions, projects)
		delete(obs.Kube.CRs, "ko")
		obs.Sessions["ko"] = apiSession{Conditions: flagged}
		return obs
	}
	tests := []struct {
		name    string
		breakIt func(o *observation)
		want    map[string]string
	}{
		{name: "healthy", breakIt: func(*observation) {}, want: map[string]string{}},
		{name: "no condition", breakIt: func(o *observation) { o.Sessions["ko"] = apiSession{} },
			want: map[string]string{"session ko": "no condition EventsPublished=False ObjectTooLarge"}},
		{name: "AgenticSession", breakIt: func(o *observation) { o.Kube.CRs["ko"] = []crInfo{{Namespace: "chaos-kube-a", Name: "ko"}} },
			want: map[string]string{"session ko": "AgenticSession chaos-kube-a/ko exists"}},
		{name: "runner", breakIt: func(o *observation) {
			o.Runners["ko"] = []runnerProc{{PID: 9, Session: "ko", Replica: "runner-manager-1"}}
		}, want: map[string]string{"session ko": "runs a local runner (pid 9 on runner-manager-1)"}},
		{name: "runner record", breakIt: func(o *observation) { o.Owners["ko"] = registry.Endpoint{Owner: "runner-manager-0"} },
			want: map[string]string{"session ko": "runner record of runner-manager-0"}},
		{name: "condition left on a session under the limit", breakIt: func(o *observation) {
			a := o.Sessions["run"]
			a.Conditions = flagged
			o.Sessions["run"] = a
		}, want: map[string]string{"session run": "under the payload limit, yet condition EventsPublished=False ObjectTooLarge"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := healthyOver()
			tc.breakIt(&obs)
			wantObjectProblems(t, objectProblems(sessions, projects, obs), tc.want)
		})
	}
	obs := observation{}
	obs.Tally.Resources = map[string]tallyCounts{tallySessions: {SeenIDs: []string{"run"}}, tallyProjects: {SeenIDs: []string{localP.ID, kubeP.ID}},
		tallySettings: {SeenIDs: []string{""}}}
	if f := tallyProblems(sessions, projects, obs); f.missing != 0 || f.overLimit != 1 {
		t.Errorf("tally findings %+v, want nothing missing and 1 session over the limit", f)
	}
}

// wantObjectProblems fails t unless got (objectProblems' result) names
// problems of exactly the objects of want, each naming want's phrase.
func wantObjectProblems(t *testing.T, got map[string][]string, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("problems %v, want %d objects: %v", got, len(want), want)
	}
	for obj, phrase := range want {
		if !strings.Contains(strings.Join(got[obj], "; "), phrase) {
			t.Errorf("%s: %v, want it to name %q", obj, got[obj], phrase)
		}
	}
}
