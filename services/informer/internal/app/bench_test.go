package app_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
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

// benchProjects is how many projects the seeded sessions are spread over
// (BENCH_PROJECTS, default 1): the server's per-publish work can depend
// on how many subjects the stream holds (README, Fencing: a move to
// another project).
func benchProjects() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_PROJECTS")); err == nil && v > 0 {
		return v
	}
	return 1
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
	projects := benchProjects()
	for i := range n {
		project := "proj"
		if projects > 1 {
			project = fmt.Sprintf("proj-%04d", i%projects)
		}
		if _, err := e.api.Sessions().CreateSession(ctx, &ambientv1.CreateSessionRequest{
			Name: fmt.Sprintf("bench-%06d", i), ProjectId: proto.String(project), Prompt: proto.String("benchmark prompt text"),
		}); err != nil {
			e.b.Fatal(err)
		}
	}
}

// labelled runs the informer under the pprof label part=informer, which its
// goroutines (and those of its gRPC and NATS clients) inherit: profile a
// benchmark with -cpuprofile and look at the informer alone with
// go tool pprof -tagfocus part=informer.
func labelled(ctx context.Context, run func(ctx context.Context)) {
	pprof.Do(ctx, pprof.Labels("part", "informer"), run)
}

func (e *benchEnv) start(b *testing.B, overrides ...string) context.CancelFunc {
	b.Helper()
	env := map[string]string{
		apiclient.EnvAPIToken: testenv.APIToken, apiclient.EnvGRPCAddr: e.api.GRPCAddr(), bus.EnvNATSURL: e.nats.ClientURL(),
		service.EnvMetricsAddr: "127.0.0.1:0", config.EnvInstanceID: "bench", service.EnvLogLevel: "error",
		// A starved reader can still lose watch events at the server (a
		// 2-core machine shared with the API, NATS and the load); resync
		// heals that, and api-dropped reports it.
		config.EnvResyncPeriod: "20s",
		config.EnvWorkers:      strconv.Itoa(benchWorkers()),
	}
	for i := 0; i+1 < len(overrides); i += 2 {
		env[overrides[i]] = overrides[i+1]
	}
	cfg, err := config.Load(envconfig.Map(env))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // Run's result
	// Owned by the benchmark: cancelled and awaited in Cleanup.
	go labelled(ctx, func(ctx context.Context) {
		done <- app.Run(ctx, cfg, testLogger(nil, "bench"), app.WithHealthyAfter(time.Second))
	})
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
func (e *benchEnv) rawPublishRate(stream string, n, workers int, withKV bool) float64 {
	e.b.Helper()
	ctx := context.Background()
	var kv jetstream.KeyValue
	if withKV {
		var err error
		if kv, err = e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: strings.ToLower(stream)}); err != nil {
			e.b.Fatal(err)
		}
	}
	subj := strings.ToLower(stream)
	if _, err := bus.EnsureStream(ctx, e.js, bus.StreamConfig{Name: stream, Subjects: []string{subj + ".>"}}); err != nil {
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
				if _, err := e.js.Publish(ctx, fmt.Sprintf("%s.%d.%d", subj, w, i), data, jetstream.WithMsgID(strconv.FormatInt(i, 10))); err != nil {
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

// buildInformer builds the informer binary into a temporary directory.
func buildInformer(b *testing.B) string {
	b.Helper()
	// Another build to compare with (main's, say), run by this benchmark.
	if bin := os.Getenv("INFORMER_BENCH_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.TempDir(), "informer")
	build := exec.Command("go", "build", "-o", bin, "github.com/ambient-code/control-plane/services/informer/cmd/informer")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build informer: %v\n%s", err, out)
	}
	return bin
}

// child is the informer binary running as a child process.
type child struct {
	cmd     *exec.Cmd
	metrics string // METRICS_ADDR
}

// startChild runs bin against e with the benchmark's base environment plus
// extra NAME=value entries.
func (e *benchEnv) startChild(bin string, extra ...string) *child {
	e.b.Helper()
	addr := testenv.FreeAddr(e.b)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		apiclient.EnvAPIToken+"="+testenv.APIToken, apiclient.EnvGRPCAddr+"="+e.api.GRPCAddr(),
		bus.EnvNATSURL+"="+e.nats.ClientURL(), service.EnvMetricsAddr+"="+addr,
		config.EnvInstanceID+"=bench", service.EnvLogLevel+"=warn", config.EnvResyncPeriod+"=0",
		config.EnvWorkers+"="+strconv.Itoa(benchWorkers()))
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.b.Fatal(err)
	}
	return &child{cmd: cmd, metrics: addr}
}

// stop ends the child with SIGTERM and waits for it.
func (c *child) stop(b *testing.B) {
	b.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	if err := c.cmd.Wait(); err != nil {
		b.Errorf("informer exited: %v", err)
	}
}

// scrape returns the lines of the child's /metrics.
func (c *child) scrape() ([]string, error) {
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// gauge reads one unlabelled sample from the child's /metrics; -1 when it
// cannot be read.
func (c *child) gauge(name string) float64 {
	lines, err := c.scrape()
	if err != nil {
		return -1
	}
	for _, line := range lines {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// counter sums the samples of a counter whose labels include labels (for
// example `resource="sessions"`) from the child's /metrics; -1 when it
// cannot be read.
func (c *child) counter(name, labels string) float64 {
	lines, err := c.scrape()
	if err != nil {
		return -1
	}
	var sum float64
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok || !strings.Contains(rest, labels) {
			continue
		}
		_, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return -1
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return -1
		}
		sum += v
	}
	return sum
}

// BenchmarkInitialSync measures an informer's first sync of BENCH_SESSIONS
// sessions: list, diff against an empty KV, publish and store each. It also
// reports how long after the process started the first event was in the
// stream (first-event-ms: start, lease, the whole list). The
// informer runs as its own process (the real binary, built here), so its
// peak RSS is its own, not the in-memory API's or the NATS server's.
func BenchmarkInitialSync(b *testing.B) {
	n := benchSessions()
	bin := buildInformer(b)
	for b.Loop() {
		e := newBenchEnv(b)
		e.seed(n)
		// The raw rate is measured right before and right after the
		// informer, on the same server: on a shared machine the load moves
		// between the phases, and the mean of the two is the fairer
		// reference.
		rawBefore := e.rawPublishRate("RAW1", min(n, 50_000), benchWorkers(), true)
		load := testenv.LoadAverage(b)
		start := time.Now()
		c := e.startChild(bin)
		e.waitCount(events.StreamName, 1, time.Minute)
		first := time.Since(start)
		e.waitCount(events.StreamName, uint64(n), 30*time.Minute)
		took := time.Since(start)
		peak := testenv.PeakRSSMB(b, c.cmd.Process.Pid)
		cpu := testenv.CPUOf(b, c.cmd.Process.Pid)
		c.stop(b)
		load = (load + testenv.LoadAverage(b)) / 2
		rate := float64(n) / took.Seconds()
		rawAfter := e.rawPublishRate("RAW2", min(n, 50_000), benchWorkers(), true)
		b.ReportMetric(rate, "objects/s")
		b.ReportMetric(float64(first.Milliseconds()), "first-event-ms")
		b.ReportMetric(peak, "informer-peak-RSS-MB")
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/object")
		b.ReportMetric(rawBefore, "raw-js+kv-before/s")
		b.ReportMetric(rawAfter, "raw-js+kv-after/s")
		b.ReportMetric(rate/((rawBefore+rawAfter)/2), "ratio-to-raw-js+kv")
		b.ReportMetric(e.rawPublishRate("RAW3", min(n, 50_000), benchWorkers(), false), "raw-js-msgs/s")
		b.ReportMetric(load, "loadavg")
	}
}

// BenchmarkInitialSyncInProcess is BenchmarkInitialSync with the informer in
// the benchmark process, for profiles (see labelled); its rate is not the
// informer's alone (API and NATS share the process and its GC).
func BenchmarkInitialSyncInProcess(b *testing.B) {
	n := benchSessions()
	for b.Loop() {
		e := newBenchEnv(b)
		e.seed(n)
		runtime.GC()
		start := time.Now()
		e.start(b)
		if path := os.Getenv("BENCH_HEAP_PROFILE"); path != "" {
			// Mid-sync, when the informer holds the most.
			e.waitCount(events.StreamName, uint64(n/2), 30*time.Minute)
			writeHeapProfile(b, path)
		}
		e.waitCount(events.StreamName, uint64(n), 30*time.Minute)
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "objects/s")
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
		b.ReportMetric(e.rawPublishRate("RAW1", changes, benchWorkers(), false), "raw-js-msgs/s")
		b.ReportMetric(e.rawPublishRate("RAW2", changes, benchWorkers(), true), "raw-js+kv/s")
	}
}

type latencies struct {
	p50, p99 time.Duration
	lastAck  time.Time
	// stored is each event's stream timestamp by its id (Nats-Msg-Id).
	stored map[string]time.Time
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
	stored := make(map[string]time.Time, n)
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
			stored[m.Headers().Get(jetstream.MsgIDHeader)] = md.Timestamp
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
	return latencies{p50: ds[len(ds)/2], p99: ds[len(ds)*99/100], lastAck: last, stored: stored}
}

// BenchmarkDeleteMarkers4000 is issue 14's acceptance 4 for the informer:
// 4,000 create+delete cycles, then the objects bucket's message count and
// the informer's own memory (it runs as a child process) against their
// values before. OBJECTS_MARKER_TTL is 1s so the markers expire within the
// run.
func BenchmarkDeleteMarkers4000(b *testing.B) {
	const n, base = 4000, 1000
	bin := buildInformer(b)
	for b.Loop() {
		e := newBenchEnv(b)
		e.seed(base)
		c := e.startChild(bin, config.EnvMarkerTTL+"=1s")
		e.waitCount(events.StreamName, base, 5*time.Minute)
		ctx := context.Background()
		kvBefore, err := kvMessages(ctx, e.js, bus.BucketObjects)
		if err != nil {
			b.Fatal(err)
		}
		heapBefore, rssBefore := c.gauge("go_memstats_heap_inuse_bytes"), c.gauge("process_resident_memory_bytes")
		start := time.Now()
		cycles(b, e.api, n, func() (uint64, error) { return e.count(events.StreamName), nil }, base)
		took := time.Since(start)
		var kvAfter uint64
		if err := testenv.Poll(time.Minute, func() error {
			var err error
			if kvAfter, err = kvMessages(ctx, e.js, bus.BucketObjects); err != nil || kvAfter > kvBefore {
				return fmt.Errorf("bucket holds %d messages, %d before: %v", kvAfter, kvBefore, err)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		heapAfter, rssAfter := c.gauge("go_memstats_heap_inuse_bytes"), c.gauge("process_resident_memory_bytes")
		c.stop(b)
		b.ReportMetric(float64(kvBefore), "kv-msgs-before")
		b.ReportMetric(float64(kvAfter), "kv-msgs-after")
		b.ReportMetric(heapAfter/heapBefore, "heap-after/before")
		b.ReportMetric(rssAfter/rssBefore, "rss-after/before")
		b.ReportMetric(float64(2*n)/took.Seconds(), "events/s")
	}
}

// writeHeapProfile writes the live heap to path (BENCH_HEAP_PROFILE).
func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}
