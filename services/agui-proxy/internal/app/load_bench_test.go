package app_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// Shape of BenchmarkStreams100's load.
const (
	loadSessions  = 10                   // runners, one session each
	loadStreams   = 100                  // streams started at once per round, spread over the sessions (AGUI_BENCH_STREAMS)
	loadRounds    = 5                    // rounds per path per iteration, direct and proxy interleaved
	loadWords     = 20                   // content events per stream
	loadWordDelay = 5 * time.Millisecond // runner delay between content events
	// loadEvents is what each stream must deliver: RUN_STARTED,
	// TEXT_MESSAGE_START, the words, TEXT_MESSAGE_END, RUN_FINISHED.
	loadEvents = loadWords + 4
)

// BenchmarkStreams100 is issue 15's agui-proxy load: 100 AG-UI run streams
// started at once over 10 sessions (10 demo-runner processes), once straight
// to the runners and once through the agui-proxy binary (a child process
// with the default configuration, so its CPU and memory are its own), the
// two paths interleaved round by round so that the machine's other load hits
// both alike; and a third time through baseproxy (testdata/baseproxy), the
// smallest relay the standard library makes (httputil.ReverseProxy), the
// yardstick of what net/http itself costs on this machine. It reports, next
// to direct:
//
// ttfb p50/p99 and the overhead over direct (request sent to first event
// received); proxy-µs/event, the proxy process's CPU (utime+stime from
// /proc/<pid>/stat, 10 ms ticks) during the proxy rounds per event it
// relayed, beside runner-µs/event, the runners' own CPU per event they sent;
// gap-ratio, the median gap between consecutive content events through the
// proxy over the same median direct (1: the runner's pacing reaches the
// client untouched; buffering, or a proxy falling behind, shrinks it);
// errors, failed requests or streams without every event; the proxy's heap
// and goroutines idle and after the load, and its peak RSS; syscall-µs, what
// one trivial system call costs on this machine at that moment, the
// yardstick of the CPU figures (relaying an event takes at least a read, a
// write and a wake-up); and base-overhead-p50/p99-ms, base-µs/event and
// base-gap-ratio, baseproxy's figures in the same run.
//
//	go test -run '^$' -bench Streams100 -benchtime 3x ./internal/app/
//
// AGUI_BENCH_PROXY_BIN runs another build of the binary instead, to compare
// two versions under the same machine load, run after run;
// AGUI_BENCH_STREAMS changes the number of streams per round (the proxy that
// keeps up with 10 streams on a loaded machine may not with 100).
func BenchmarkStreams100(b *testing.B) {
	e := newEnv(b)
	ids := make([]string, loadSessions)
	runners := make([]*runner, loadSessions)
	for i := range ids {
		ids[i] = fmt.Sprintf("s-load-%d", i)
		runners[i] = startRunner(b, ids[i], "DEMO_WORD_DELAY="+loadWordDelay.String())
		e.register(b, runners[i].endpoint(b, ids[i]))
	}
	px := startProxyProcess(b, e)
	routes := make([]string, loadSessions)
	for i, r := range runners {
		routes[i] = ids[i] + "=" + r.url("")
	}
	base := startBaseProxy(b, strings.Join(routes, ","))
	streams := loadStreams
	if v := os.Getenv("AGUI_BENCH_STREAMS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("AGUI_BENCH_STREAMS=%q: want a count >= 1", v)
		}
		streams = n
	}
	direct, proxied, based := make([]string, streams), make([]string, streams), make([]string, streams)
	for i := range streams {
		direct[i] = runners[i%loadSessions].url("/")
		proxied[i] = px.url + "/sessions/" + ids[i%loadSessions] + "/agui/run"
		based[i] = base.url + "/sessions/" + ids[i%loadSessions] + "/agui/run"
	}
	runnerPIDs := make([]int, loadSessions)
	for i, r := range runners {
		runnerPIDs[i] = r.pid
	}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 2 * streams, MaxIdleConnsPerHost: streams, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	body := runInput(words(loadWords))
	// A warm-up round of each path opens the connections the rounds reuse.
	runRound(b, client, direct, body)
	runRound(b, client, proxied, body)
	runRound(b, client, based, body)
	idle := px.scrape(b)

	var d, p, bp roundStats
	var proxyCPU, baseCPU, runnerCPUDirect, runnerCPUProxy time.Duration
	for b.Loop() {
		for range loadRounds {
			r0 := testenv.CPUOf(b, runnerPIDs...)
			d.merge(runRound(b, client, direct, body))
			r1, p1 := testenv.CPUOf(b, runnerPIDs...), testenv.CPUOf(b, px.pid)
			p.merge(runRound(b, client, proxied, body))
			r2, p2 := testenv.CPUOf(b, runnerPIDs...), testenv.CPUOf(b, px.pid)
			b1 := testenv.CPUOf(b, base.pid)
			bp.merge(runRound(b, client, based, body))
			baseCPU += testenv.CPUOf(b, base.pid) - b1
			runnerCPUDirect += r1 - r0
			runnerCPUProxy += r2 - r1
			proxyCPU += p2 - p1
		}
	}
	b.StopTimer()
	client.CloseIdleConnections()
	after := px.settle(b, idle)

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	perEvent := func(cpu time.Duration, events int) float64 {
		return float64(cpu) / float64(time.Microsecond) / float64(max(events, 1))
	}
	b.ReportMetric(ms(d.ttfb(0.50)), "direct-ttfb-p50-ms")
	b.ReportMetric(ms(d.ttfb(0.99)), "direct-ttfb-p99-ms")
	b.ReportMetric(ms(p.ttfb(0.50)), "proxy-ttfb-p50-ms")
	b.ReportMetric(ms(p.ttfb(0.99)), "proxy-ttfb-p99-ms")
	b.ReportMetric(ms(p.ttfb(0.50)-d.ttfb(0.50)), "overhead-p50-ms")
	b.ReportMetric(ms(p.ttfb(0.99)-d.ttfb(0.99)), "overhead-p99-ms")
	b.ReportMetric(perEvent(proxyCPU, p.events), "proxy-µs/event")
	b.ReportMetric(perEvent(runnerCPUProxy, p.events), "runner-µs/event")
	b.ReportMetric(perEvent(runnerCPUDirect, d.events), "runner-direct-µs/event")
	b.ReportMetric(float64(p.gap())/float64(max(d.gap(), 1)), "gap-ratio")
	b.ReportMetric(ms(bp.ttfb(0.50)-d.ttfb(0.50)), "base-overhead-p50-ms")
	b.ReportMetric(ms(bp.ttfb(0.99)-d.ttfb(0.99)), "base-overhead-p99-ms")
	b.ReportMetric(perEvent(baseCPU, bp.events), "base-µs/event")
	b.ReportMetric(float64(bp.gap())/float64(max(d.gap(), 1)), "base-gap-ratio")
	b.ReportMetric(float64(d.errors), "direct-errors")
	b.ReportMetric(float64(p.errors), "proxy-errors")
	b.ReportMetric(float64(p.streams), "proxy-streams")
	b.ReportMetric(idle.heapMB, "heap-idle-MB")
	b.ReportMetric(after.heapMB, "heap-after-MB")
	b.ReportMetric(float64(idle.goroutines), "goroutines-idle")
	b.ReportMetric(float64(after.goroutines), "goroutines-after")
	b.ReportMetric(testenv.PeakRSSMB(b, px.pid), "peak-rss-MB")
	b.ReportMetric(syscallCost(), "syscall-µs")
	b.Logf("content-event gaps p10/p50/p90: direct %v %v %v, proxy %v %v %v",
		quantile(d.gaps, .1), quantile(d.gaps, .5), quantile(d.gaps, .9), quantile(p.gaps, .1), quantile(p.gaps, .5), quantile(p.gaps, .9))
	if d.errors+p.errors+bp.errors > 0 {
		b.Errorf("errors: direct %d, proxy %d, baseproxy %d (first: %v %v %v)", d.errors, p.errors, bp.errors, d.firstErr, p.firstErr, bp.firstErr)
	}
}

// roundStats accumulates the streams of one path.
type roundStats struct {
	ttfbs    []time.Duration
	gaps     []time.Duration
	events   int
	streams  int
	errors   int
	firstErr error
}

func (s *roundStats) merge(o roundStats) {
	s.ttfbs = append(s.ttfbs, o.ttfbs...)
	s.gaps = append(s.gaps, o.gaps...)
	s.events += o.events
	s.streams += o.streams
	s.errors += o.errors
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}

func (s *roundStats) ttfb(q float64) time.Duration { return quantile(s.ttfbs, q) }
func (s *roundStats) gap() time.Duration           { return quantile(s.gaps, 0.5) }

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// runRound starts one stream per URL at the same moment and waits for all.
func runRound(b *testing.B, client *http.Client, urls []string, body string) roundStats {
	b.Helper()
	var (
		mu    sync.Mutex
		out   roundStats
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for _, u := range urls {
		wg.Go(func() {
			<-start
			ttfb, gaps, n, err := oneStream(client, u, body)
			mu.Lock()
			defer mu.Unlock()
			out.streams++
			out.events += n
			if err != nil {
				out.errors++
				if out.firstErr == nil {
					out.firstErr = err
				}
				return
			}
			out.ttfbs = append(out.ttfbs, ttfb)
			out.gaps = append(out.gaps, gaps...)
		})
	}
	close(start)
	wg.Wait()
	return out
}

// oneStream runs one AG-UI run and returns the time to its first event, the
// gaps between its content events, and how many events arrived.
func oneStream(client *http.Client, url, body string) (time.Duration, []time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, nil, 0, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	frames, err := readFrames(resp.Body)
	if err != nil {
		return 0, nil, len(frames), fmt.Errorf("%s: %w", url, err)
	}
	if len(frames) != loadEvents || eventType(frames[len(frames)-1].data) != "RUN_FINISHED" {
		return 0, nil, len(frames), fmt.Errorf("%s: %d events, want %d ending in RUN_FINISHED", url, len(frames), loadEvents)
	}
	var gaps []time.Duration
	for i := 3; i < 2+loadWords; i++ { // between consecutive content events
		gaps = append(gaps, frames[i].at.Sub(frames[i-1].at))
	}
	return frames[0].at.Sub(sent), gaps, len(frames), nil
}

// proxyProcess is the agui-proxy binary running as a child process.
type proxyProcess struct {
	url, metrics string
	pid          int
}

// startProxyProcess runs the real binary with its default configuration
// (SSE keep-alive, write timeouts, tracing recorded) against e's NATS, until
// the benchmark ends.
func startProxyProcess(b *testing.B, e *env) *proxyProcess {
	b.Helper()
	port, _ := testenv.FreePortRange(b, 2) // two ports of one block, never coinciding
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	metrics := net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))
	bin := proxyBin
	if other := os.Getenv("AGUI_BENCH_PROXY_BIN"); other != "" {
		bin = other
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"LOCAL_PROXY_ADDR=" + addr, "METRICS_ADDR=" + metrics, "NATS_URL=" + e.nats.ClientURL()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stopWithBenchmark(b, cmd)
	testenv.Eventually(b, 10*time.Second, func() error {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errorf("readyz %d: %s", resp.StatusCode, stderr.String())
		}
		return nil
	})
	return &proxyProcess{url: "http://" + addr, metrics: "http://" + metrics, pid: cmd.Process.Pid}
}

// childProcess is a process the benchmark started, stopped at its end.
type childProcess struct {
	url string
	pid int
}

// startBaseProxy builds testdata/baseproxy (only benchmarks need it, so
// TestMain does not) and runs it with routes (session=runner-URL pairs)
// until the benchmark ends.
func startBaseProxy(b *testing.B, routes string) *childProcess {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "baseproxy")
	build := exec.Command("go", "build", "-o", bin, "./testdata/baseproxy")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build baseproxy: %v\n%s", err, out)
	}
	port, _ := testenv.FreePortRange(b, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin)
	cmd.Env = []string{"BASEPROXY_ADDR=" + addr, "BASEPROXY_ROUTES=" + routes}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stopWithBenchmark(b, cmd)
	url := "http://" + addr
	testenv.Eventually(b, 10*time.Second, func() error {
		resp, err := http.Get(url + "/sessions/none/agui/run")
		if err != nil {
			return fmt.Errorf("%w: %s", err, stderr.String())
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			return errorf("baseproxy answered %d, want 404", resp.StatusCode)
		}
		return nil
	})
	return &childProcess{url: url, pid: cmd.Process.Pid}
}

// stopWithBenchmark starts cmd and stops it (SIGTERM, then SIGKILL after
// 15 s) when the benchmark ends.
func stopWithBenchmark(b *testing.B, cmd *exec.Cmd) {
	b.Helper()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { // owned by the benchmark: ends with the process, waited for in Cleanup
		_ = cmd.Wait() // killed below; the status says nothing
		close(exited)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // may already be gone
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill() // stuck: end it
			<-exited
		}
	})
}

// procSample is what the proxy's /metrics says about its memory.
type procSample struct {
	heapMB     float64
	goroutines int
	streams    int
}

func (p *proxyProcess) scrape(b *testing.B) procSample {
	b.Helper()
	var s procSample
	for l := range strings.SplitSeq(bodyOf(b, p.metrics+"/metrics"), "\n") {
		name, val, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch {
		case name == "go_memstats_heap_inuse_bytes":
			s.heapMB = f / (1 << 20)
		case name == "go_goroutines":
			s.goroutines = int(f)
		case strings.HasPrefix(name, "agui_proxy_active_streams{"):
			s.streams += int(f)
		}
	}
	return s
}

// settle waits (up to 20 s) for the proxy's goroutines to come back to
// their idle count once the clients have closed their connections, and
// returns the sample then.
func (p *proxyProcess) settle(b *testing.B, idle procSample) procSample {
	b.Helper()
	var s procSample
	// Polling another process's metrics: there is nothing to wait on. A
	// proxy that never settles is reported as it is, not failed.
	_ = testenv.Poll(20*time.Second, func() error {
		s = p.scrape(b)
		if s.goroutines > idle.goroutines || s.streams > 0 {
			return errorf("%d goroutines (idle %d), %d streams", s.goroutines, idle.goroutines, s.streams)
		}
		return nil
	})
	return s
}

// syscallCost measures one getppid system call, in µs.
func syscallCost() float64 {
	const n = 20000
	start := time.Now()
	for range n {
		syscall.Getppid()
	}
	return float64(time.Since(start)) / float64(time.Microsecond) / n
}
