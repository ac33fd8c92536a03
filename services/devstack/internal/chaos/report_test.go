package chaos

import (
	"strings"
	"testing"
	"time"
)

// TestReportNamesEveryFailure: the report carries the result line, one row
// per check and per fault, each failure line (table pipes escaped), and
// maps what failed to the findings of issue 14.
func TestReportNamesEveryFailure(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	faults := []faultRecord{
		{Fault: Fault{Kind: FaultOversize, Down: 30 * time.Second}, Target: "big", Start: t0.Add(20 * time.Second), Restored: t0.Add(50 * time.Second), Took: -1},
		{Fault: Fault{Kind: FaultNATSOutage, Down: 30 * time.Second}, Target: "all NATS nodes", Start: t0.Add(100 * time.Second), Restored: t0.Add(131 * time.Second)},
	}
	in := auditInput{
		Sessions:      []session{{ID: "big", Project: localP, Oversize: true}},
		ScheduleStart: t0,
		Faults:        faults,
		Sampler:       samplerStats{Samples: 10, Twice: []twiceRecord{{Session: "s1", First: t0.Add(140 * time.Second), Last: t0.Add(141 * time.Second), Samples: 3}}},
		Streams:       []streamInfo{{Name: "AMBIENT_DLQ", Replicas: 1, Msgs: 4}, {Name: "KV_ambient-objects", Replicas: 3, Msgs: 9}, {Name: "KV_ambient-runners", Replicas: 3, Msgs: 2}},
		Converged:     -1, ConvergeLimit: time.Minute,
		Trend: []trendPoint{{After: 0, Wrong: 12}, {After: 2 * time.Second, Wrong: -1}, {After: 4 * time.Second, Wrong: 3}},
	}
	res := auditResult{
		Lost: 1, Twice: 1,
		Checks: []check{
			{Name: "objects", OK: false, Detail: "1 wrong", Failures: []string{"session big: stopped, runner still alive (pid 9 on a|b)"}},
			{Name: "replicas", OK: true, Detail: "fine"},
		},
	}
	cfg := Config{Seed: 42, Changes: 300, Short: true, KubeMaxDeliver: 3, KubeOutage: 36 * time.Second, SampleInterval: 100 * time.Millisecond, Commit: "abc123"}
	md := report{cfg: cfg, plan: Plan{End: 5 * time.Minute}, begun: t0.Add(-time.Minute), t0: t0, end: t0.Add(5 * time.Minute), in: in, res: res, cpus: 2,
		signals: []signalCount{{Phrase: logSignals[0], Process: "informer-0", Lines: 7}}}.markdown()
	for _, want := range []string{
		"## Result: FAILED",
		"lost=1 twice=1 moved_by_outage=0 converged_s=-1",
		"| objects | **FAIL** | 1 wrong |",
		"| replicas | pass | fine |",
		"| 1 | 20.0 | oversize object | big | 30s | 50.0 |",
		"| 2 | 100.0 | NATS outage | all NATS nodes | 30s | 131.0 |",
		`- session big: stopped, runner still alive (pid 9 on a\|b)`,
		"`--seed 42`",
		"`abc123`",
		"1 sessions twice after it",
		"3. An oversize object (600 KiB of annotations) blocks its own stop: **reproduced**",
		"AMBIENT_DLQ at R1, 4 dead letters",
		"| maximum payload exceeded | informer-0 | 7 |",
		"0s: 12, 2s: unreadable, 4s: 3",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestNATSConfigRoutesToTheOthers: each node of the loopback cluster routes
// to the two others, never to itself, and keeps JetStream in its own store.
func TestNATSConfigRoutesToTheOthers(t *testing.T) {
	nodes := []natsNode{
		{Name: "nats-0", ClientPort: 1000, ClusterPort: 1001, MonitorPort: 1002, StoreDir: "/d/0"},
		{Name: "nats-1", ClientPort: 2000, ClusterPort: 2001, MonitorPort: 2002, StoreDir: "/d/1"},
		{Name: "nats-2", ClientPort: 3000, ClusterPort: 3001, MonitorPort: 3002, StoreDir: "/d/2"},
	}
	conf := natsConfig(nodes[1], nodes)
	for _, want := range []string{"server_name: nats-1", "port: 2000", `http: "127.0.0.1:2002"`, `store_dir: "/d/1"`, "port: 2001",
		`routes: ["nats-route://127.0.0.1:1001", "nats-route://127.0.0.1:3001"]`} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "127.0.0.1:2001\"]") || strings.Contains(conf, "nats-route://127.0.0.1:2001") {
		t.Errorf("node routes to itself:\n%s", conf)
	}
}
