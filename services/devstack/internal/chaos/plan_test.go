package chaos

import (
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/group"
)

func testPlanConfig(short bool, changes int) PlanConfig {
	apiOutage, freeze, storeLoss := DefaultAPIOutage, DefaultFreeze, DefaultNodeStoreLoss
	if short {
		apiOutage, freeze, storeLoss = ShortAPIOutage, ShortFreeze, 0
	}
	return PlanConfig{
		Changes: changes, Kills: Kills(short), Warmup: 20 * time.Second, RestartDelay: 2 * time.Second,
		KillSettle: 15 * time.Second, NodeLoss: 30 * time.Second, NodeStoreLoss: storeLoss, NATSOutage: 30 * time.Second, APIOutage: apiOutage, KubeOutage: 186 * time.Second,
		Freezes: Freezes(), Freeze: freeze, RunnerKills: RunnerKills(short), NodeFreezes: NodeFreezes(short), NodeFreeze: DefaultNodeFreeze,
		OverLimit: OverLimit(short),
	}
}

// TestPlanRunsEveryFaultInOrder: a plan has one oversize object, (full
// only) the sessions over the payload limit, one watch
// cut, one NATS node loss, (full only) one NATS node back with an empty
// store, one NATS outage, one API outage and one
// kube-apiserver outage, kills every killable instance once (short:
// replica 0 of each), then freezes the informer leader, a kube-reconciler
// and a runner-manager, then kills a runner on each runner-manager (short:
// on replica 0), then (full only) freezes runner-manager-1's whole node,
// one fault after the other, the API outage after the NATS outage and the
// apiserver outage last. The freezes and runner kills add under a minute
// to the short plan (CI), which has no node freeze.
func TestPlanRunsEveryFaultInOrder(t *testing.T) {
	tests := []struct {
		name        string
		short       bool
		kills       []string
		runnerKills []string
		nodeFreezes []string
	}{
		{"full", false, []string{"informer-0", "kube-reconciler-0", "runner-manager-0", "agui-proxy-0", "informer-1", "kube-reconciler-1", "runner-manager-1", "agui-proxy-1"},
			[]string{"runner-manager-0", "runner-manager-1"}, []string{"runner-manager-1"}},
		{"short", true, []string{"informer-0", "kube-reconciler-0", "runner-manager-0", "agui-proxy-0"}, []string{"runner-manager-0"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testPlanConfig(tc.short, 300)
			p := NewPlan(c, rand.New(rand.NewPCG(1, 2)))
			kinds := map[FaultKind]int{}
			var kills, freezes, runnerKills, nodeFreezes, order []string
			var prevEnd, added time.Duration
			for i, f := range p.Faults {
				kinds[f.Kind]++
				if len(order) == 0 || order[len(order)-1] != string(f.Kind) {
					order = append(order, string(f.Kind))
				}
				switch f.Kind {
				case FaultKill:
					kills = append(kills, f.Target)
				case FaultFreeze:
					freezes = append(freezes, f.Target)
					added += f.End() - f.At
					if f.Down != c.Freeze || f.Takeover != isKubeReconciler(f.Target) {
						t.Errorf("freeze of %s: down %s, takeover %t; want %s, takeover for a kube-reconciler", f.Target, f.Down, f.Takeover, c.Freeze)
					}
				case FaultRunnerKill:
					runnerKills = append(runnerKills, f.Target)
					added += f.End() - f.At
				case FaultNodeFreeze:
					nodeFreezes = append(nodeFreezes, f.Target)
					// The settle outlasts the harness' watch after the thaw.
					if f.Down != c.NodeFreeze || f.Settle < thawWatch {
						t.Errorf("node freeze of %s: down %s, settle %s; want %s, at least %s", f.Target, f.Down, f.Settle, c.NodeFreeze, thawWatch)
					}
				}
				if f.At < prevEnd {
					t.Errorf("fault %d (%s) starts at %s, before the previous one ended at %s", i, f.Kind, f.At, prevEnd)
				}
				prevEnd = f.End()
			}
			if !slices.Equal(kills, tc.kills) {
				t.Errorf("kills %v, want %v", kills, tc.kills)
			}
			if want := []string{"informer", "kube-reconciler-1", "runner-manager-1"}; !slices.Equal(freezes, want) {
				t.Errorf("freezes %v, want %v", freezes, want)
			}
			if !slices.Equal(runnerKills, tc.runnerKills) {
				t.Errorf("runner kills %v, want %v", runnerKills, tc.runnerKills)
			}
			if !slices.Equal(nodeFreezes, tc.nodeFreezes) {
				t.Errorf("node freezes %v, want %v", nodeFreezes, tc.nodeFreezes)
			}
			wantOrder := []string{string(FaultOversize)}
			if !tc.short {
				wantOrder = append(wantOrder, string(FaultOverLimit))
			}
			wantOrder = append(wantOrder, string(FaultKill), string(FaultWatchCut), string(FaultKill), string(FaultFreeze), string(FaultRunnerKill))
			if !tc.short {
				// After the runner kills: it moves all of runner-manager-1's
				// sessions away, and a runner kill needs one there.
				wantOrder = append(wantOrder, string(FaultNodeFreeze))
			}
			wantOrder = append(wantOrder, string(FaultNodeLoss))
			if !tc.short {
				// The node back with an empty store: after the node loss,
				// before the outage of every node.
				wantOrder = append(wantOrder, string(FaultNodeStoreLoss))
			}
			wantOrder = append(wantOrder, string(FaultNATSOutage), string(FaultAPIOutage), string(FaultKubeOutage))
			if !slices.Equal(order, wantOrder) {
				t.Errorf("fault kinds in order %v, want %v", order, wantOrder)
			}
			if tc.short && added > time.Minute {
				t.Errorf("the freezes and the runner kill add %s to the short plan, want at most a minute", added)
			}
			for _, k := range []FaultKind{FaultOversize, FaultWatchCut, FaultNodeLoss, FaultNATSOutage, FaultAPIOutage, FaultKubeOutage} {
				if kinds[k] != 1 {
					t.Errorf("%d faults %q, want 1", kinds[k], k)
				}
			}
			if want := map[bool]int{false: 1, true: 0}[tc.short]; kinds[FaultNodeStoreLoss] != want {
				t.Errorf("%d faults %q, want %d", kinds[FaultNodeStoreLoss], FaultNodeStoreLoss, want)
			}
			last := p.Faults[len(p.Faults)-1]
			if last.Kind != FaultKubeOutage || p.End != last.End() {
				t.Errorf("last fault %s ending %s, plan end %s; want the apiserver outage ending the plan", last.Kind, last.End(), p.End)
			}
			if n := len(p.Faults); n < 3 || p.Faults[n-3].Kind != FaultNATSOutage || p.Faults[n-2].Kind != FaultAPIOutage {
				t.Fatalf("faults before the last: want the NATS outage, then the API outage; got %v", p.Faults)
			}
			api := p.Faults[len(p.Faults)-2]
			if want := testPlanConfig(tc.short, 300).APIOutage; api.Down != want {
				t.Errorf("API outage down %s, want %s", api.Down, want)
			}
			// The informers' watches must be back (WATCH_BACKOFF_MAX 30s)
			// before the apiserver outage's quiet window begins.
			if api.Settle < 30*time.Second+kubeQuietBefore {
				t.Errorf("API outage settles %s, want at least WATCH_BACKOFF_MAX (30s) + the quiet window before the apiserver outage", api.Settle)
			}
			if p.Faults[0].At != 20*time.Second {
				t.Errorf("first fault at %s, want after the 20s warmup", p.Faults[0].At)
			}
		})
	}
}

// TestPlanOverLimit: the full plan makes the sessions over the payload
// limit right after the oversize object and keeps them there beside the
// kills until both informer kills and the informer freeze have settled, so
// new leaders meet them while they are over the limit; the next fault
// waits only its settle time, the plan ends after it is over, and the
// short plan (CI) has none.
func TestPlanOverLimit(t *testing.T) {
	for _, short := range []bool{false, true} {
		p := NewPlan(testPlanConfig(short, 300), rand.New(rand.NewPCG(1, 2)))
		i := slices.IndexFunc(p.Faults, func(f Fault) bool { return f.Kind == FaultOverLimit })
		if short {
			if i >= 0 {
				t.Errorf("short plan has an over-limit fault: %+v", p.Faults[i])
			}
			continue
		}
		if i != 1 || p.Faults[0].Kind != FaultOversize {
			t.Fatalf("over-limit fault at %d, want right after the oversize object: %v", i, p.Faults)
		}
		f, next := p.Faults[i], p.Faults[i+1]
		if !f.Beside || next.At != f.At+overLimitSettle || f.End() != next.At {
			t.Errorf("over-limit fault %+v, next fault at %s; want beside the next ones, which start %s after it", f, next.At, overLimitSettle)
		}
		var informerFaults []string
		for _, k := range p.Faults[i+1:] {
			if (k.Kind == FaultKill || k.Kind == FaultFreeze) && strings.HasPrefix(k.Target, svcInformer) {
				informerFaults = append(informerFaults, string(k.Kind)+" "+k.Target)
				if k.At < f.At || k.End() > f.Over() {
					t.Errorf("%s of %s at %s..%s, outside the over-limit time %s..%s", k.Kind, k.Target, k.At, k.End(), f.At, f.Over())
				}
			}
		}
		if want := []string{"kill -9 informer-0", "kill -9 informer-1", "process frozen informer"}; !slices.Equal(informerFaults, want) {
			t.Errorf("informer faults while over the limit %v, want %v", informerFaults, want)
		}
		if f.Over() != informerFaultsOver(p.Faults) || f.Down < overLimitMinDown {
			t.Errorf("over the limit until %s (down %s), want until the last informer fault settled at %s, at least %s", f.Over(), f.Down, informerFaultsOver(p.Faults), overLimitMinDown)
		}
		if p.End < f.Over() {
			t.Errorf("plan ends at %s, before the over-limit fault is over at %s", p.End, f.Over())
		}
	}
}

// TestPlanTakeoverKill: with TakeoverDown the last kube-reconciler killed
// (short: the only one) stays down that long, marked Takeover; every other
// kill comes back after RestartDelay; without it none is a takeover.
func TestPlanTakeoverKill(t *testing.T) {
	for _, tc := range []struct {
		name     string
		short    bool
		takeover time.Duration
		want     string // the takeover kill's target; "" for none
	}{
		{"full", false, 12 * time.Second, "kube-reconciler-1"},
		{"short", true, 12 * time.Second, "kube-reconciler-0"},
		{"off", false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testPlanConfig(tc.short, 300)
			c.TakeoverDown = tc.takeover
			var got []string
			for _, f := range NewPlan(c, rand.New(rand.NewPCG(1, 2))).Faults {
				if f.Kind != FaultKill {
					continue
				}
				want := c.RestartDelay
				if f.Takeover {
					got = append(got, f.Target)
					want = tc.takeover
				}
				if f.Down != want {
					t.Errorf("kill of %s (takeover %t) down %s, want %s", f.Target, f.Takeover, f.Down, want)
				}
			}
			if want := slices.DeleteFunc([]string{tc.want}, func(s string) bool { return s == "" }); !slices.Equal(got, want) {
				t.Errorf("takeover kills %v, want %v", got, want)
			}
		})
	}
}

// TestPlanSpreadsChanges: exactly the asked number of changes, in time
// order, from the start to before the end of the last fault, every kind of
// change present, and the same seed gives the same plan.
func TestPlanSpreadsChanges(t *testing.T) {
	p := NewPlan(testPlanConfig(false, 2000), rand.New(rand.NewPCG(7, 7)))
	if len(p.Changes) != 2000 {
		t.Fatalf("%d changes, want 2000", len(p.Changes))
	}
	ops := map[Op]int{}
	kube := p.Faults[len(p.Faults)-1]
	if p.Quiet.From >= kube.At || p.Quiet.To <= kube.At+stopGrace {
		t.Fatalf("quiet window %+v does not cover the apiserver outage's start %s and its graceful stop", p.Quiet, kube.At)
	}
	for i, c := range p.Changes {
		ops[c.Op]++
		if c.At < 0 || c.At >= p.End || (i > 0 && c.At < p.Changes[i-1].At) {
			t.Fatalf("change %d at %s: want in order within [0, %s)", i, c.At, p.End)
		}
		if c.At >= p.Quiet.From && c.At < p.Quiet.To {
			t.Fatalf("change %d at %s inside the quiet window %+v", i, c.At, p.Quiet)
		}
	}
	for _, w := range opWeights {
		// 2000 draws: each kind lands within a third of its expected share.
		want := 2000 * w.weight / 100
		if got := ops[w.op]; got < want*2/3 || got > want*4/3 {
			t.Errorf("%d changes %s, want about %d", got, w.op, want)
		}
	}
	again := NewPlan(testPlanConfig(false, 2000), rand.New(rand.NewPCG(7, 7)))
	if !slices.Equal(p.Changes, again.Changes) || !slices.Equal(p.Faults, again.Faults) {
		t.Error("the same seed gave another plan")
	}
}

// TestRetryBudget: the kube-apiserver outage must outlast the time a
// consumer keeps retrying one event: the waits between MaxDeliver tries.
func TestRetryBudget(t *testing.T) {
	tests := []struct {
		maxDeliver int
		want       time.Duration
	}{
		{1, 0},
		{2, time.Second},
		{3, 6 * time.Second},
		{5, 156 * time.Second}, // the issue: "any apiserver outage longer than about 156 s loses deletes"
		{7, 156*time.Second + 240*time.Second},
	}
	for _, tc := range tests {
		if got := RetryBudget(tc.maxDeliver, group.DefaultBackoff); got != tc.want {
			t.Errorf("RetryBudget(%d) = %s, want %s", tc.maxDeliver, got, tc.want)
		}
	}
}

// TestParseFlags: --short chooses the CI size unless a flag says otherwise,
// the apiserver outage follows the retry budget, and nonsense is refused.
func TestParseFlags(t *testing.T) {
	tests := []struct {
		name           string
		args           []string
		changes        int
		maxDeliver     int
		kubeOutage     time.Duration
		apiOutage      time.Duration
		wantErr        bool
		wantSeedRandom bool
	}{
		{name: "defaults", args: nil, changes: 2000, maxDeliver: 5, kubeOutage: 186 * time.Second, apiOutage: 75 * time.Second, wantSeedRandom: true},
		{name: "short", args: []string{"--short"}, changes: 300, maxDeliver: 3, kubeOutage: 36 * time.Second, apiOutage: 30 * time.Second, wantSeedRandom: true},
		{name: "short with changes", args: []string{"--short", "--changes", "500", "--kube-max-deliver", "4", "--seed", "9", "--api-outage", "45s"}, changes: 500, maxDeliver: 4, kubeOutage: 66 * time.Second, apiOutage: 45 * time.Second},
		{name: "explicit outage", args: []string{"--kube-outage", "10s", "--seed", "3"}, changes: 2000, maxDeliver: 5, kubeOutage: 10 * time.Second, apiOutage: 75 * time.Second},
		{name: "negative API outage", args: []string{"--api-outage", "-1s"}, wantErr: true},
		{name: "no changes", args: []string{"--changes", "0"}, wantErr: true},
		{name: "more witnesses than the cap", args: []string{"--witnesses", "30"}, wantErr: true},
		{name: "stray argument", args: []string{"now"}, wantErr: true},
		{name: "takeover within MEMBER_TTL", args: []string{"--takeover-down", "6s"}, wantErr: true},
		{name: "freeze within the lease TTL", args: []string{"--freeze", "10s"}, wantErr: true},
		{name: "node freeze within MEMBER_TTL and a sweep", args: []string{"--node-freeze", "8s"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseFlags(tc.args, io.Discard)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseFlags(%q) = nil error", tc.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Changes != tc.changes || c.KubeMaxDeliver != tc.maxDeliver || c.KubeOutage != tc.kubeOutage || c.APIOutage != tc.apiOutage {
				t.Errorf("changes %d, max deliver %d, kube outage %s, API outage %s; want %d, %d, %s, %s",
					c.Changes, c.KubeMaxDeliver, c.KubeOutage, c.APIOutage, tc.changes, tc.maxDeliver, tc.kubeOutage, tc.apiOutage)
			}
			if want := map[bool]time.Duration{false: 5 * time.Minute, true: 2 * time.Minute}[c.Short]; c.ConvergeTimeout != want {
				t.Errorf("converge timeout %s, want %s", c.ConvergeTimeout, want)
			}
			if want := map[bool]time.Duration{false: DefaultFreeze, true: ShortFreeze}[c.Short]; c.Freeze != want {
				t.Errorf("freeze %s, want %s", c.Freeze, want)
			}
			if c.Seed == 0 {
				t.Error("seed 0: want one chosen and reported")
			}
			if !tc.wantSeedRandom && c.Seed != 9 && c.Seed != 3 {
				t.Errorf("seed %d, want the one given", c.Seed)
			}
		})
	}
}

// TestNodeFreezesOfConfig: the full run freezes runner-manager-1's node for
// --node-freeze (30s by default); the short run and --node-freeze 0 have no
// node freeze.
func TestNodeFreezesOfConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"runner-manager-1"}},
		{[]string{"--short"}, nil},
		{[]string{"--node-freeze", "0"}, nil},
	} {
		c, err := ParseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := nodeFreezes(c); !slices.Equal(got, tc.want) {
			t.Errorf("%q: node freezes %v, want %v", tc.args, got, tc.want)
		}
		if len(tc.args) == 0 && c.NodeFreeze != DefaultNodeFreeze {
			t.Errorf("node freeze %s, want %s", c.NodeFreeze, DefaultNodeFreeze)
		}
	}
}

// TestPlanNodeStoreLoss: with NodeStoreLoss the plan has one NATS node
// back with an empty store, right after the node loss, down that long and
// settling nodeStoreLossSettle (its catch-up bound) before the NATS
// outage; without it none, and the faults before it do not move.
func TestPlanNodeStoreLoss(t *testing.T) {
	c := testPlanConfig(false, 300)
	p := NewPlan(c, rand.New(rand.NewPCG(1, 2)))
	i := slices.IndexFunc(p.Faults, func(f Fault) bool { return f.Kind == FaultNodeStoreLoss })
	if i < 1 || p.Faults[i-1].Kind != FaultNodeLoss || p.Faults[i+1].Kind != FaultNATSOutage {
		t.Fatalf("store loss at %d, want between the node loss and the NATS outage: %v", i, p.Faults)
	}
	f := p.Faults[i]
	if f.Down != c.NodeStoreLoss || f.Settle != nodeStoreLossSettle || f.Beside || f.Target != "" || p.Faults[i+1].At != f.End() {
		t.Errorf("store loss %+v, next at %s; want down %s, settle %s, the NATS outage after it", f, p.Faults[i+1].At, c.NodeStoreLoss, nodeStoreLossSettle)
	}
	c.NodeStoreLoss = 0
	without := NewPlan(c, rand.New(rand.NewPCG(1, 2)))
	if slices.ContainsFunc(without.Faults, func(f Fault) bool { return f.Kind == FaultNodeStoreLoss }) {
		t.Errorf("NodeStoreLoss 0: want no store loss, got %v", without.Faults)
	}
	if !slices.Equal(without.Faults[:i], p.Faults[:i]) {
		t.Errorf("the faults before the store loss moved without it: %v, want %v", without.Faults[:i], p.Faults[:i])
	}
	if got, want := p.End-without.End, f.End()-f.At; got != want {
		t.Errorf("the store loss lengthens the plan by %s, want its down and settle time %s", got, want)
	}
}

// TestNodeStoreLossOfConfig: the full run loses a NATS node's store for
// --node-store-loss (30s by default); the short run (CI) has none, its
// schedule the same whatever the flag says; 0 turns it off, and a
// negative length is refused.
func TestNodeStoreLossOfConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, DefaultNodeStoreLoss},
		{[]string{"--node-store-loss", "45s"}, 45 * time.Second},
		{[]string{"--node-store-loss", "0"}, 0},
		{[]string{"--short"}, 0},
		{[]string{"--short", "--node-store-loss", "45s"}, 0},
	} {
		c, err := ParseFlags(append([]string{"--seed", "5"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		pc := planConfig(c)
		if pc.NodeStoreLoss != tc.want {
			t.Errorf("%q: store loss down %s, want %s", tc.args, pc.NodeStoreLoss, tc.want)
		}
		n := 0
		for _, f := range NewPlan(pc, rand.New(rand.NewPCG(1, 2))).Faults {
			if f.Kind == FaultNodeStoreLoss {
				n++
			}
		}
		if want := map[bool]int{false: 0, true: 1}[tc.want > 0]; n != want {
			t.Errorf("%q: %d store losses in the plan, want %d", tc.args, n, want)
		}
	}
	short, err := ParseFlags([]string{"--short", "--seed", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	flagged, err := ParseFlags([]string{"--short", "--seed", "5", "--node-store-loss", "45s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, b := NewPlan(planConfig(short), rand.New(rand.NewPCG(1, 2))), NewPlan(planConfig(flagged), rand.New(rand.NewPCG(1, 2)))
	if !slices.Equal(a.Faults, b.Faults) || a.End != b.End {
		t.Errorf("--node-store-loss changed the short plan: %v (end %s), want %v (end %s)", b.Faults, b.End, a.Faults, a.End)
	}
	if _, err := ParseFlags([]string{"--node-store-loss", "-1s"}, io.Discard); err == nil {
		t.Error("--node-store-loss -1s: want an error")
	}
}
