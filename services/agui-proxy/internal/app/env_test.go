package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/natsserver"
	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/app"
	"github.com/ambient-code/control-plane/services/agui-proxy/internal/config"
)

// env is one embedded NATS with the runners bucket.
type env struct {
	nats *natsserver.Server
	kv   jetstream.KeyValue
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := bus.EnsureKV(ctx, js, bus.RunnersBucket(1))
	if err != nil {
		t.Fatalf("ensure kv: %v", err)
	}
	return &env{nats: srv, kv: kv}
}

// runner is a demo-runner process.
type runner struct {
	addr string
	pid  int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startRunner starts the demo runner on a random port; extra env such as
// DEMO_WORD_DELAY slows it down. It is stopped with t.
func startRunner(t testing.TB, sessionID string, extraEnv ...string) *runner {
	t.Helper()
	cmd := exec.Command(demoRunnerBin)
	cmd.Env = append([]string{"AGUI_PORT=0", "SESSION_ID=" + sessionID, "PATH=" + os.Getenv("PATH")}, extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start demo runner: %v", err)
	}
	r := &runner{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1) // the listen address, sent once
	// Owned by the runner: reads its log until the process exits.
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "runner listening" {
				addrc <- line.Addr
				sent = true
			}
		}
		_ = cmd.Wait() // exit status is irrelevant: tests kill runners
		close(r.done)
	}()
	t.Cleanup(func() { r.stop(t) })
	select {
	case r.addr = <-addrc:
	case <-r.done:
		t.Fatal("demo runner exited before listening")
	case <-time.After(10 * time.Second):
		t.Fatal("demo runner did not report its address")
	}
	return r
}

// stop terminates the runner and waits for it.
func (r *runner) stop(t testing.TB) {
	t.Helper()
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM) // may already be gone
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

func (r *runner) url(path string) string { return "http://" + r.addr + path }

// stats reads the counters of the runner's /debug/stats (its other
// fields, such as the prompt's digest, are not numbers and are left out).
func (r *runner) stats(t testing.TB) map[string]int64 {
	t.Helper()
	resp, err := http.Get(r.url("/debug/stats"))
	if err != nil {
		t.Fatalf("runner stats: %v", err)
	}
	defer resp.Body.Close()
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("decode stats: %v", err)
	}
	s := make(map[string]int64, len(raw))
	for k, v := range raw {
		var n int64
		if json.Unmarshal(v, &n) == nil {
			s[k] = n
		}
	}
	return s
}

// endpoint is the registry record of a runner.
func (r *runner) endpoint(t testing.TB, sessionID string) registry.Endpoint {
	t.Helper()
	host, port, err := net.SplitHostPort(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return registry.Endpoint{SessionID: sessionID, Owner: "test-manager", Host: host, Port: p, PID: r.pid,
		StartedAt: time.Now().UTC(), State: registry.StateRunning}
}

// register writes the endpoint record as runner-manager does.
func (e *env) register(t testing.TB, ep registry.Endpoint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := registry.Claim(ctx, e.kv, ep); err != nil {
		t.Fatalf("register %s: %v", ep.SessionID, err)
	}
}

func (e *env) release(t testing.TB, sessionID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := registry.Release(ctx, e.kv, sessionID, "test-manager"); err != nil {
		t.Fatalf("release %s: %v", sessionID, err)
	}
}

// proxyCfg is a proxy config for tests: loopback, random ports, no keep-alive.
func (e *env) proxyCfg() config.Config {
	c := config.Defaults()
	c.ListenAddr = "127.0.0.1:0"
	c.MetricsAddr = "127.0.0.1:0"
	c.NATS.URL = e.nats.ClientURL()
	c.SSEKeepAlive = 0
	c.ShutdownTimeout = 2 * time.Second
	return c
}

// proxyHandle is a running in-process proxy.
type proxyHandle struct {
	app  *app.App
	url  string
	stop func() error // cancels Run and returns its result
}

// startProxy runs the proxy app until the test ends and waits until it is
// ready (NATS connected, routing table synced).
func startProxy(t testing.TB, cfg config.Config) *proxyHandle {
	t.Helper()
	return startProxyWith(t, cfg)
}

// startProxyWith is startProxy with App options.
func startProxyWith(t testing.TB, cfg config.Config, opts ...app.Option) *proxyHandle {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("AGUI_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return startProxyOn(t, cfg, log, opts...)
}

// startProxyLogged is startProxy keeping the proxy's log for the test.
func startProxyLogged(t testing.TB, cfg config.Config) (*proxyHandle, *testenv.Buffer) {
	t.Helper()
	var buf testenv.Buffer
	return startProxyOn(t, cfg, slog.New(slog.NewTextHandler(&buf, nil))), &buf
}

// startProxyOn runs the proxy with log.
func startProxyOn(t testing.TB, cfg config.Config, log *slog.Logger, opts ...app.Option) *proxyHandle {
	t.Helper()
	a, err := app.New(cfg, "test", log, opts...)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)        // Run's result
	go func() { errc <- a.Run(ctx) }() // owned by the test; waited for by stop
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-errc:
			case <-time.After(15 * time.Second):
				runErr = errors.New("proxy did not stop")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	testenv.Eventually(t, 10*time.Second, func() error { return a.Ready(context.Background()) })
	return &proxyHandle{app: a, url: "http://" + a.Addr(), stop: stop}
}

func (p *proxyHandle) session(id, path string) string { return p.url + "/sessions/" + id + path }

// runInput is a RunAgentInput with fixed ids, so direct and proxied runs
// produce identical bytes.
func runInput(text string) string {
	b, _ := json.Marshal(map[string]any{
		"threadId": "thread-1", "runId": "run-1", "state": map[string]any{}, "tools": []any{}, "context": []any{},
		"forwardedProps": map[string]any{},
		"messages":       []map[string]string{{"id": "m1", "role": "user", "content": text}},
	})
	return string(b)
}

// postRun starts a run and returns the response (body unread).
func postRun(ctx context.Context, t testing.TB, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

// frame is one SSE frame with its arrival time.
type frame struct {
	data string
	at   time.Time
}

// readFrames reads "\n\n"-separated frames (as the AG-UI client splits them)
// until EOF and returns them with arrival times.
func readFrames(r io.Reader) ([]frame, error) {
	br := bufio.NewReader(r)
	var out []frame
	var cur strings.Builder
	for {
		line, err := br.ReadString('\n')
		cur.WriteString(line)
		if line == "\n" {
			out = append(out, frame{data: cur.String(), at: time.Now()})
			cur.Reset()
		}
		if err != nil {
			if errors.Is(err, io.EOF) && cur.Len() == 0 {
				return out, nil
			}
			return out, err
		}
	}
}

// eventType returns the AG-UI type of a "data: {json}\n\n" frame.
func eventType(f string) string {
	var ev struct {
		Type string `json:"type"`
	}
	payload, ok := strings.CutPrefix(strings.TrimSpace(f), "data: ")
	if !ok || json.Unmarshal([]byte(payload), &ev) != nil {
		return ""
	}
	return ev.Type
}

// jsonError decodes a proxy error and checks its Content-Type.
func jsonError(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("decode error body: %v", err)
	}
	return e.Error
}

func get(t testing.TB, url string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

func words(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("w%d", i)
	}
	return strings.Join(w, " ")
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }

// ready probes the proxy's readiness as /readyz does.
func (p *proxyHandle) ready(t testing.TB) error {
	t.Helper()
	return p.app.Ready(t.Context())
}

// streamEnd reads the rest of a stream in the background and sends what it
// read once the stream ends.
func streamEnd(body io.Reader) <-chan streamRest {
	end := make(chan streamRest, 1) // the stream's end
	go func() {                     // exits at the end of the stream
		frames, err := readFrames(body)
		end <- streamRest{frames, err}
	}()
	return end
}

// streamRest is what streamEnd read: the frames, and why reading ended.
type streamRest struct {
	frames []frame
	err    error
}

// wantRunError waits up to timeout for the end of a stream (streamEnd) and
// checks that it is clean and that its last event is the proxy's RUN_ERROR
// of code and message; a stream still open then fails the test with open.
func wantRunError(t testing.TB, end <-chan streamRest, timeout time.Duration, code, message, open string) {
	t.Helper()
	select {
	case got := <-end:
		if got.err != nil {
			t.Fatalf("stream ended with %v, want a clean end", got.err)
		}
		checkRunError(t, got.frames, code, message)
	case <-time.After(timeout):
		t.Fatal(open)
	}
}
