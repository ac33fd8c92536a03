package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestReplicaProblem: a node is a current replica of a stream when it
// leads it, or follows online, current and with lag 0; anything else is
// named.
func TestReplicaProblem(t *testing.T) {
	peers := func(ps ...*jetstream.PeerInfo) *jetstream.ClusterInfo {
		return &jetstream.ClusterInfo{Leader: "nats-0", Replicas: ps}
	}
	for _, tc := range []struct {
		name string
		ci   *jetstream.ClusterInfo
		want string
	}{
		{"leader", &jetstream.ClusterInfo{Leader: "nats-2"}, ""},
		{"current follower", peers(&jetstream.PeerInfo{Name: "nats-1"}, &jetstream.PeerInfo{Name: "nats-2", Current: true}), ""},
		{"catching up", peers(&jetstream.PeerInfo{Name: "nats-2", Lag: 812}), "not current (lag 812)"},
		{"current with lag", peers(&jetstream.PeerInfo{Name: "nats-2", Current: true, Lag: 3}), "lag 3"},
		{"offline", peers(&jetstream.PeerInfo{Name: "nats-2", Offline: true, Current: true}), "offline"},
		{"not in the peer set", peers(&jetstream.PeerInfo{Name: "nats-1", Current: true}), "not a replica (leader nats-0)"},
		{"no leader", &jetstream.ClusterInfo{}, "no leader"},
		// A leaderless stream's info is a replica's own view: the node
		// back with an empty store answers that it is current.
		{"leaderless, the node's own view", &jetstream.ClusterInfo{Replicas: []*jetstream.PeerInfo{{Name: "nats-0"}, {Name: "nats-2", Current: true}}}, "no leader"},
		{"no cluster", nil, "no cluster information"},
	} {
		if got := replicaProblem(tc.ci, "nats-2"); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestEmptyDir: the store is left an empty directory (what a new
// PersistentVolume mounts), and what was in it is counted; a store that
// is not there yet is made.
func TestEmptyDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats-1")
	deep := filepath.Join(dir, "jetstream", "$G", "streams", "AMBIENT_EVENTS", "msgs")
	if err := os.MkdirAll(deep, 0o750); err != nil {
		t.Fatal(err)
	}
	for i, size := range []int{10, 20, 4096} {
		if err := os.WriteFile(filepath.Join(deep, strings.Repeat("b", i+1)+".blk"), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, size, err := emptyDir(dir)
	if err != nil || files != 3 || size != 10+20+4096 {
		t.Fatalf("emptyDir = %d files, %d bytes, %v; want 3, 4126, nil", files, size, err)
	}
	left, err := os.ReadDir(dir)
	if err != nil || len(left) != 0 {
		t.Fatalf("store after emptyDir: %v, %v; want an empty directory", left, err)
	}
	fresh := filepath.Join(t.TempDir(), "never")
	if files, _, err := emptyDir(fresh); err != nil || files != 0 {
		t.Fatalf("emptyDir of a missing store = %d files, %v; want 0, nil", files, err)
	}
	if fi, err := os.Stat(fresh); err != nil || !fi.IsDir() {
		t.Fatalf("missing store not made: %v", err)
	}
}

// TestAwaitCurrentAfterStoreLoss: on a real three-node JetStream cluster,
// the node leading an R3 stream is shut down, its peers take writes
// without it, and it comes back under its name and routes with an empty
// store: replicasBehind names it while it is away, and awaitCurrent sees
// it a current replica of the stream, of an R3 KV bucket, of a durable
// consumer with acked messages and of a consumer group member's consumer
// (named, not durable, on a work-queue stream: replicated all the same)
// once it has caught up from its peers. replicatedConsumers lists those
// two, not an ordered reader (R1).
func TestAwaitCurrentAfterStoreLoss(t *testing.T) {
	ctx := t.Context()
	c := testenv.NewNATSCluster(t, 3)
	srvs := []string{c.Start(0).ClientURL(), c.Start(1).ClientURL(), c.Start(2).ClientURL()}
	nc := testenv.ConnURL(t, strings.Join(srvs, ","))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var st jetstream.Stream
	testenv.Eventually(t, time.Minute, func() error {
		st, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ev.>"}, Replicas: 3})
		return err
	})
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "objects", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := js.Publish(ctx, "ev.a", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "k"+string(rune('a'+i%26)), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	durable, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := durable.Fetch(50)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{}); err != nil {
		t.Fatal(err)
	}
	// As pcgroups makes a member's consumer on the group's work stream.
	wq, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "WQ", Subjects: []string{"wq.>"}, Retention: jetstream.WorkQueuePolicy, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wq.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Name: "member-a", InactiveThreshold: time.Hour, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	v := &natsView{nc: nc, js: js}
	consumers, err := v.replicatedConsumers(ctx, "n1")
	if err != nil || !slices.Equal(consumers, []string{"EVENTS/worker", "WQ/member-a"}) {
		t.Fatalf("replicated consumers of n1 = %q, %v; want [EVENTS/worker WQ/member-a] (the ordered consumer is R1)", consumers, err)
	}
	streams := append([]string{"EVENTS", "KV_objects", "WQ"}, consumers...)
	// Every replica current before the fault: the baseline.
	if took, behind := v.awaitCurrent(ctx, "n1", streams, time.Now().Add(time.Minute)); took < 0 {
		t.Fatalf("n1 not current before the fault: %v", behind)
	}
	lost := c.ShutdownStreamLeader(js, "EVENTS")
	idx := int(lost[1] - '0')
	testenv.Eventually(t, time.Minute, func() error {
		_, err := js.Publish(ctx, "ev.a", []byte("while it is away"))
		return err
	})
	if behind := v.replicasBehind(ctx, lost, streams); !slices.ContainsFunc(behind, func(b string) bool { return strings.HasPrefix(b, "EVENTS/worker: ") }) {
		t.Fatalf("%s shut down, but replicasBehind finds it current on the consumer: %q", lost, behind)
	} else {
		t.Logf("while away: %v", behind)
	}
	// Start gives the member a new store directory: an empty store under
	// the same name and routes.
	c.Start(idx)
	took, behind := v.awaitCurrent(ctx, lost, streams, time.Now().Add(time.Minute))
	if took < 0 {
		t.Fatalf("%s back with an empty store: not current within a minute: %v", lost, behind)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 201 {
		t.Fatalf("stream after the catch-up: %+v, %v; want 201 messages", info, err)
	}
	ci, err := durable.Info(ctx)
	if err != nil || ci.AckFloor.Stream != 50 {
		t.Fatalf("consumer after the catch-up: %+v, %v; want its 50 acks", ci, err)
	}
	// A consumer deleted since (a group member that left) is passed over.
	if behind := v.replicasBehind(ctx, lost, []string{"EVENTS/left"}); len(behind) != 0 {
		t.Fatalf("a consumer that is gone: %q, want it passed over", behind)
	}
}

// TestStoreLossCheck: the check passes a run without a store loss (the
// short run) and a node that caught up within its settle time and stayed
// current; it fails one that did not catch up, whose store lacks streams,
// that fell behind by the end, or whose fault failed.
func TestStoreLossCheck(t *testing.T) {
	streams := []string{"AMBIENT_EVENTS", "KV_ambient-objects", "KV_ambient-runners"}
	consumers := []string{"AMBIENT_EVENTS_kube/kube-reconciler-0", "AMBIENT_EVENTS_kube/kube-reconciler-1"}
	ok := func() faultRecord {
		return faultRecord{Fault: Fault{Kind: FaultNodeStoreLoss, Down: 30 * time.Second, Settle: nodeStoreLossSettle}, Target: "nats-1",
			StoreLoss: &storeLossRecord{Files: 40, Bytes: 3 << 20, Streams: streams, Consumers: consumers, Ready: 2900 * time.Millisecond, CaughtUp: 2300 * time.Millisecond, LocalStreams: 3, LocalMsgs: 900}}
	}
	for _, tc := range []struct {
		name   string
		change func(*faultRecord)
		none   bool
		want   string // a failure line contains it; "" passes
	}{
		{name: "no store loss", none: true},
		{name: "caught up", change: func(*faultRecord) {}},
		{name: "not caught up", change: func(f *faultRecord) {
			f.StoreLoss.CaughtUp, f.StoreLoss.Behind = -1, []string{"AMBIENT_EVENTS: not current (lag 812)"}
		}, want: "not a current replica 30s after it was ready: AMBIENT_EVENTS: not current (lag 812)"},
		{name: "a consumer not caught up", change: func(f *faultRecord) {
			f.StoreLoss.CaughtUp, f.StoreLoss.Behind = -1, []string{"AMBIENT_EVENTS_kube/kube-reconciler-1: not current (lag 4)"}
		}, want: "not a current replica 30s after it was ready: AMBIENT_EVENTS_kube/kube-reconciler-1: not current (lag 4)"},
		{name: "store lacks a stream", change: func(f *faultRecord) { f.StoreLoss.LocalStreams = 2 }, want: "its store holds 2 streams once current, want 3"},
		{name: "behind at the end", change: func(f *faultRecord) { f.StoreLoss.EndBehind = []string{"KV_ambient-runners: offline"} },
			want: "not a current replica at the end: KV_ambient-runners: offline"},
		{name: "fault failed", change: func(f *faultRecord) { f.Err, f.StoreLoss = "nats-1 not ready after the fault", nil }, want: "nats-1 not ready after the fault"},
		{name: "no streams", change: func(f *faultRecord) { f.StoreLoss.Streams = nil }, want: "nothing tested"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var faults []faultRecord
			if !tc.none {
				f := ok()
				tc.change(&f)
				faults = append(faults, f)
			}
			c := storeLossCheck(faults)
			if c.OK != (tc.want == "") {
				t.Fatalf("OK %t, want %t: %+v", c.OK, tc.want == "", c)
			}
			if tc.want != "" && !strings.Contains(strings.Join(c.Failures, "\n"), tc.want) {
				t.Errorf("failures %q lack %q", c.Failures, tc.want)
			}
			if tc.name == "caught up" && (!strings.Contains(c.Detail, "ready 2.9s after its restart, current on 3 streams and buckets and 2 replicated consumers 2.3s after it was ready") ||
				!strings.Contains(c.Detail, "5 of 5 still current at the end")) {
				t.Errorf("detail %q lacks the catch-up time", c.Detail)
			}
			if tc.none && c.Detail != "no store loss in this run" {
				t.Errorf("detail %q, want that none ran", c.Detail)
			}
		})
	}
}

// TestReportStoreLoss: a run with a store loss describes it in the
// system under test, maps it to a finding, and its schedule row carries
// the catch-up note.
func TestReportStoreLoss(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f := faultRecord{Fault: Fault{Kind: FaultNodeStoreLoss, At: 400 * time.Second, Down: 30 * time.Second, Settle: nodeStoreLossSettle}, Target: "nats-2",
		Start: t0.Add(400 * time.Second), Restored: t0.Add(433 * time.Second),
		StoreLoss: &storeLossRecord{Files: 40, Bytes: 3 << 20, Streams: []string{"AMBIENT_EVENTS"}, Consumers: []string{"AMBIENT_EVENTS_kube/kube-reconciler-0"}, Ready: 3 * time.Second, CaughtUp: 1200 * time.Millisecond, LocalStreams: 1, LocalMsgs: 10}}
	f.Note = "the leader of AMBIENT_EVENTS" + storeLossNote(*f.StoreLoss, f.Settle)
	in := auditInput{ScheduleStart: t0, Faults: []faultRecord{f}, Converged: time.Second}
	md := report{cfg: Config{Seed: 1, KubeMaxDeliver: 5}, plan: Plan{Faults: []Fault{f.Fault}, End: 10 * time.Minute}, t0: t0, begun: t0, end: t0.Add(10 * time.Minute),
		in: in, res: audit(in)}.markdown()
	for _, want := range []string{
		"| 1 | 400.0 | NATS node lost with its store | nats-2 | 30s | 433.0 | the leader of AMBIENT_EVENTS; store emptied while down: 40 files, 3.0 MiB; ready 3s after its restart; a current replica (lag 0) of all 1 streams and buckets and 1 replicated consumers 1.2s after it was ready",
		"5c. A NATS node back with an empty store (kill -9 of nats-2, its store deleted while down: a pod on a new PersistentVolume): held",
		"- A NATS node lost with its store (the full run, after the node loss)",
		"| a NATS node back with an empty store was a current replica (lag 0) of every stream, KV bucket and replicated consumer within its settle time, and at the end | pass |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
