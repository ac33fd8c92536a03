package app_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/testenv"
	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/informer/internal/app"
	"github.com/ambient-code/control-plane/services/informer/internal/config"
)

// Benchmarks are whole scenarios: run them with -benchtime=1x, e.g.
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/app/
//
// BENCH_SESSIONS overrides the size of the initial sync (default 100000).
// Each reports the raw JetStream publish rate measured in the same run, on
// the same embedded server, next to the informer's figure.

// benchWorkers is PUBLISH_WORKERS for the benchmarks (BENCH_WORKERS, default
// the informer's default).
func benchWorkers() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_WORKERS")); err == nil && v > 0 {
		return v
	}
	return config.DefaultWorkers
}

func benchSessions() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_SESSIONS")); err == nil && v > 0 {
		return v
	}
	return 100_000
}

// benchEnv is a harness for benchmarks (testing.B instead of testing.T).
type benchEnv struct {
	b    *testing.B
	api  *memapi.Server
	nats *natsserver.Server
	js   jetstream.JetStream
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	e := &benchEnv{b: b, api: testenv.API(b), nats: testenv.NATS(b)}
	_, e.js = testenv.JetStream(b, e.nats)
	return e
}

func (e *benchEnv) seed(n int) {
	e.b.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := e.api.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{
			Name: fmt.Sprintf("bench-%06d", i), ProjectId: proto.String("proj"), Prompt: proto.String("benchmark prompt text"),
		}); err != nil {
			e.b.Fatal(err)
		}
	}
}

func (e *benchEnv) start(b *testing.B) context.CancelFunc {
	b.Helper()
	cfg, err := config.Load(envconfig.Map(map[string]string{
		apiclient.EnvAPIToken: testenv.APIToken, apiclient.EnvGRPCAddr: e.api.GRPCAddr(), bus.EnvNATSURL: e.nats.ClientURL(),
		service.EnvMetricsAddr: "127.0.0.1:0", config.EnvInstanceID: "bench", service.EnvLogLevel: "error",
		// A starved reader can still lose watch events at the server (a
		// 2-core machine shared with the API, NATS and the load); resync
		// heals that, and api-dropped reports it.
		config.EnvResyncPeriod: "20s",
		config.EnvWorkers:      strconv.Itoa(benchWorkers()),
	}))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // Run's result
	// Owned by the benchmark: cancelled and awaited in Cleanup.
	go func() { done <- app.Run(ctx, cfg, testLogger(nil, "bench"), app.WithHealthyAfter(time.Second)) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("informer: %v", err)
		}
	})
	return cancel
}

func (e *benchEnv) count(stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func (e *benchEnv) waitCount(stream string, n uint64, timeout time.Duration) {
	e.b.Helper()
	if err := testenv.Poll(timeout, func() error {
		if got := e.count(stream); got < n {
			return fmt.Errorf("stream has %d of %d (api dropped %d watch events)", got, n, e.api.Dropped())
		}
		return nil
	}); err != nil {
		e.b.Fatal(err)
	}
}

// rawPublishRate publishes n event-sized messages to a fresh stream with
// `workers` goroutines each waiting for its ack (what the informer does),
// and returns messages per second.
func (e *benchEnv) rawPublishRate(n, workers int, withKV bool) float64 {
	e.b.Helper()
	ctx := context.Background()
	var kv jetstream.KeyValue
	if withKV {
		var err error
		if kv, err = e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "raw"}); err != nil {
			e.b.Fatal(err)
		}
	}
	if _, err := bus.EnsureStream(ctx, e.js, bus.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
		e.b.Fatal(err)
	}
	s := &ambientv1.Session{Metadata: &ambientv1.ObjectReference{Id: "x"}, Name: "bench", Prompt: proto.String("benchmark prompt text")}
	ev := events.NewEvent(eventsv1.EventType_EVENT_TYPE_ADDED, s, nil, time.Now())
	data, err := proto.Marshal(ev)
	if err != nil {
		e.b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		// Owned by rawPublishRate; exits when all n are published.
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if _, err := e.js.Publish(ctx, fmt.Sprintf("raw.%d.%d", w, i), data, jetstream.WithMsgID(strconv.FormatInt(i, 10))); err != nil {
					e.b.Error(err)
					return
				}
				if kv != nil {
					if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i), data); err != nil {
						e.b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// peakRSSMB reads VmHWM (peak resident set) of process pid.
func peakRSSMB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				return -1
			}
			return float64(kb) / 1024
		}
	}
	return -1
}

// BenchmarkInitialSync measures an informer's first sync of BENCH_SESSIONS
// sessions: list, diff against an empty KV, publish and store each. The
// informer runs as its own process (the real binary, built here), so its
// peak RSS is its own, not the in-memory API's or the NATS server's.
func BenchmarkInitialSync(b *testing.B) {
	n := benchSessions()
	bin := filepath.Join(b.TempDir(), "informer")
	build := exec.Command("go", "build", "-o", bin, "github.com/ambient-code/control-plane/services/informer/cmd/informer")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build informer: %v\n%s", err, out)
	}
	for b.Loop() {
		e := newBenchEnv(b)
		e.seed(n)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			apiclient.EnvAPIToken+"="+testenv.APIToken, apiclient.EnvGRPCAddr+"="+e.api.GRPCAddr(),
			bus.EnvNATSURL+"="+e.nats.ClientURL(), service.EnvMetricsAddr+"=127.0.0.1:0",
			config.EnvInstanceID+"=bench", service.EnvLogLevel+"=warn", config.EnvResyncPeriod+"=0",
			config.EnvWorkers+"="+strconv.Itoa(benchWorkers()))
		cmd.Stderr = os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		e.waitCount(events.StreamName, uint64(n), 30*time.Minute)
		took := time.Since(start)
		peak := peakRSSMB(cmd.Process.Pid)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Errorf("informer exited: %v", err)
		}
		b.ReportMetric(float64(n)/took.Seconds(), "objects/s")
		b.ReportMetric(peak, "informer-peak-RSS-MB")
		b.ReportMetric(e.rawPublishRate(min(n, 50_000), benchWorkers(), false), "raw-js-msgs/s")
		b.ReportMetric(e.rawPublishRate(min(n, 50_000), benchWorkers(), true), "raw-js+kv/s")
	}
}

// BenchmarkSteadyState measures events per second from API change to
// JetStream ack once the informer is synced, and the latency of each: 8
// API clients create sessions over gRPC (distinct objects, so nothing
// coalesces), and every event's latency is its stream timestamp (the ack)
// minus the object's updated_at (the change).
func BenchmarkSteadyState(b *testing.B) {
	const base, changes, writers = 1000, 20_000, 8
	for b.Loop() {
		e := newBenchEnv(b)
		e.seed(base)
		e.start(b)
		e.waitCount(events.StreamName, base, 5*time.Minute)
		c := testenv.APIClient(b, e.api)
		ctx := context.Background()
		start := time.Now()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			// Owned by the benchmark; exits after its share of changes.
			go func() {
				defer wg.Done()
				for i := w; i < changes; i += writers {
					if _, err := c.CreateSession(ctx, &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("steady-%06d", i), Prompt: proto.String("benchmark prompt text")}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		produced := time.Since(start)
		e.waitCount(events.StreamName, base+changes, 5*time.Minute)
		lat := e.latencies(base)
		b.ReportMetric(float64(changes)/lat.lastAck.Sub(start).Seconds(), "events/s")
		b.ReportMetric(float64(changes)/produced.Seconds(), "api-changes/s")
		b.ReportMetric(float64(e.api.Dropped()), "api-dropped")
		b.ReportMetric(lat.p50.Seconds()*1000, "p50-ms")
		b.ReportMetric(lat.p99.Seconds()*1000, "p99-ms")
		b.ReportMetric(e.rawPublishRate(changes, benchWorkers(), false), "raw-js-msgs/s")
		b.ReportMetric(e.rawPublishRate(changes, benchWorkers(), true), "raw-js+kv/s")
	}
}

type latencies struct {
	p50, p99 time.Duration
	lastAck  time.Time
}

// latencies reads the events after skip and measures, per event, the time
// from the object's updated_at (the API change) to the stream's timestamp
// (the ack).
func (e *benchEnv) latencies(skip int) latencies {
	e.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := e.js.Stream(ctx, events.StreamName)
	if err != nil {
		e.b.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{OptStartSeq: uint64(skip) + 1, DeliverPolicy: jetstream.DeliverByStartSequencePolicy})
	if err != nil {
		e.b.Fatal(err)
	}
	n := int(e.count(events.StreamName)) - skip
	var ds []time.Duration
	var last time.Time
	for len(ds) < n {
		batch, err := c.Fetch(n-len(ds), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.b.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				e.b.Fatal(err)
			}
			_, ev, err := events.Decode(ctx, m.Headers(), m.Data())
			if err != nil {
				e.b.Fatal(err)
			}
			ds = append(ds, md.Timestamp.Sub(events.UpdatedAt(ev.GetObject())))
			if md.Timestamp.After(last) {
				last = md.Timestamp
			}
		}
		if got == 0 {
			break
		}
	}
	if len(ds) == 0 {
		return latencies{}
	}
	slices.Sort(ds)
	return latencies{p50: ds[len(ds)/2], p99: ds[len(ds)*99/100], lastAck: last}
}
