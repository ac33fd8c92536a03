package app_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// The official AG-UI peers: a runner built on @ag-ui/encoder and a client
// built on @ag-ui/client's HttpAgent, Node processes whose scripts and
// pinned packages are in testdata/agui-peers (installed by make agui-peers).
const (
	aguiPeersDir     = "../../testdata/agui-peers"
	installAGUIPeers = "make agui-peers"
	// peerWait bounds every wait on a peer: what a peer reports comes
	// within milliseconds, so only a broken run takes this long.
	peerWait = 30 * time.Second
)

// aguiPeers returns node and the peers' directory. When node or the locked
// versions of the official packages are missing it skips the test with the
// command that installs them, or fails it in CI (CI=true), where .ci/run
// installs them.
func aguiPeers(t testing.TB) (node, dir string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + ": run " + installAGUIPeers
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH")
	}
	dir, err = filepath.Abs(aguiPeersDir)
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	readJSON(t, filepath.Join(dir, "package-lock.json"), &lock)
	for _, pkg := range []string{"@ag-ui/core", "@ag-ui/client", "@ag-ui/encoder"} {
		want := lock.Packages["node_modules/"+pkg].Version
		if want == "" {
			t.Fatalf("package-lock.json in %s does not lock %s", dir, pkg)
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
		if err != nil {
			missing("%s is not installed in %s/node_modules", pkg, dir)
		}
		var got struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(b, &got); err != nil || got.Version != want {
			missing("%s %s is installed, package-lock.json locks %s", pkg, got.Version, want)
		}
	}
	return node, dir
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// peerMsg is one JSON line a peer reports (see runner.mjs and client.mjs);
// each kind of message fills its own fields.
type peerMsg struct {
	Msg string `json:"msg"`
	// listening (runner)
	Addr string `json:"addr"`
	// run, gap, done, closed (runner)
	RunID              string `json:"runId"`
	Scenario           string `json:"scenario"`
	Accept             string `json:"accept"`
	RequestContentType string `json:"requestContentType"`
	Authorization      string `json:"authorization"`
	InputValid         bool   `json:"inputValid"`
	Issues             string `json:"issues"`
	Index              int    `json:"index"`
	Mid                bool   `json:"mid"`
	// gap (runner): the bytes written so far; read (client): the bytes
	// received so far.
	Bytes int `json:"bytes"`
	// done and gap (runner) and result (client): every byte of the
	// response as sent so far, and as received; done and result: its
	// Content-Type.
	ContentType string   `json:"contentType"`
	Types       []string `json:"types"`
	Raw         []byte   `json:"raw"`
	// event and ping (client)
	Type  string `json:"type"`
	Count int    `json:"count"`
	// result (client)
	Status      int           `json:"status"`
	Pings       int           `json:"pings"`
	Events      []aguiEvent   `json:"events"`
	NewMessages []aguiMessage `json:"newMessages"`
	Error       *clientError  `json:"error"`
	RunFailed   *clientError  `json:"runFailed"`
	// RunError is the RUN_ERROR event the client's onRunErrorEvent
	// subscriber got, if any.
	RunError *aguiEvent `json:"runError"`
}

// aguiEvent holds the fields of the AG-UI events the tests look at.
type aguiEvent struct {
	Type      string `json:"type"`
	ThreadID  string `json:"threadId"`
	RunID     string `json:"runId"`
	MessageID string `json:"messageId"`
	Delta     string `json:"delta"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// aguiMessage is a message the client assembled from a run's events.
type aguiMessage struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Content   string `json:"content"`
	ToolCalls []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"toolCalls"`
}

// clientError is the error the official client surfaced: for an HTTP error
// its status and the body it parsed (JSON when the Content-Type says so).
type clientError struct {
	Name    string          `json:"name"`
	Message string          `json:"message"`
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// peer is a running Node peer: what it reported so far, its stdin and its
// stderr.
type peer struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr testenv.Buffer
	done   chan struct{} // closed when the process has exited

	mu   sync.Mutex
	msgs []peerMsg     // guarded by mu
	grew chan struct{} // guarded by mu: closed, and replaced, when msgs grows
}

// startPeer runs node script args in the peers' directory until the test
// ends.
func startPeer(t testing.TB, name, script string, args ...string) *peer {
	t.Helper()
	node, dir := aguiPeers(t)
	p := &peer{name: name, done: make(chan struct{}), grew: make(chan struct{})}
	p.cmd = exec.Command(node, append([]string{script}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	// Owned by the peer: reads its reports until the process exits.
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20) // a result carries the whole stream
		for sc.Scan() {
			var m peerMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				fmt.Fprintf(&p.stderr, "unparsed report %q: %v\n", sc.Text(), err)
				continue
			}
			p.mu.Lock()
			p.msgs = append(p.msgs, m)
			close(p.grew)
			p.grew = make(chan struct{})
			p.mu.Unlock()
		}
		_ = p.cmd.Wait() // the exit status is irrelevant: stop ends peers
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop closes the peer's stdin, which ends it, and waits for it.
func (p *peer) stop(t testing.TB) {
	t.Helper()
	_ = p.stdin.Close() // already closed by an earlier stop
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill() // it did not end: gone either way
		<-p.done
		t.Errorf("%s did not end when its stdin closed", p.name)
	}
}

// exited reports whether the peer's process has ended.
func (p *peer) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// send writes one line to the peer's stdin.
func (p *peer) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		t.Fatalf("%s: send %q: %v", p.name, line, err)
	}
}

// waitUntil waits until cond holds for what the peer reported so far.
func (p *peer) waitUntil(t testing.TB, what string, cond func([]peerMsg) bool) {
	t.Helper()
	deadline := time.NewTimer(peerWait)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ok, grew := cond(p.msgs), p.grew
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-grew:
		case <-p.done:
			p.mu.Lock()
			ok = cond(p.msgs)
			p.mu.Unlock()
			if !ok {
				t.Fatalf("%s exited before it reported %s; stderr:\n%s", p.name, what, p.stderr.String())
			}
			return
		case <-deadline.C:
			t.Fatalf("%s did not report %s within %v; stderr:\n%s", p.name, what, peerWait, p.stderr.String())
		}
	}
}

// waitFor waits for the first report matching match and returns it.
func (p *peer) waitFor(t testing.TB, what string, match func(peerMsg) bool) peerMsg {
	t.Helper()
	var found peerMsg
	p.waitUntil(t, what, func(msgs []peerMsg) bool {
		for _, m := range msgs {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// pings returns the number of keep-alive comments a client has reported.
func (p *peer) pings() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.msgs {
		if m.Msg == "ping" {
			n = max(n, m.Count)
		}
	}
	return n
}

// waitPings waits until a client has received at least n keep-alives. A
// client whose run ended first fails the test with the run's error.
func (p *peer) waitPings(t testing.TB, n int) {
	t.Helper()
	var end *peerMsg
	p.waitUntil(t, fmt.Sprintf("%d keep-alive comments", n), func(msgs []peerMsg) bool {
		for i, m := range msgs {
			switch {
			case m.Msg == "ping" && m.Count >= n:
				return true
			case m.Msg == "result":
				end = &msgs[i]
				return true
			}
		}
		return false
	})
	if end != nil {
		t.Fatalf("%s ended its run before %d keep-alive comments: error %+v, onRunFailed %+v; stderr:\n%s",
			p.name, n, end.Error, end.RunFailed, p.stderr.String())
	}
}

// nodeRunner is runner.mjs: an AG-UI runner on the official encoder.
type nodeRunner struct {
	*peer
	addr string
}

func startNodeRunner(t testing.TB) *nodeRunner {
	t.Helper()
	p := startPeer(t, "node runner", "runner.mjs")
	m := p.waitFor(t, "its address", func(m peerMsg) bool { return m.Msg == "listening" })
	return &nodeRunner{peer: p, addr: m.Addr}
}

// endpoint is the registry record of the runner.
func (r *nodeRunner) endpoint(t testing.TB, sessionID string) registry.Endpoint {
	t.Helper()
	return (&runner{addr: r.addr, pid: r.cmd.Process.Pid}).endpoint(t, sessionID)
}

// report waits for the runner's report kind ("run", "done", "closed") of
// runID.
func (r *nodeRunner) report(t testing.TB, kind, runID string) peerMsg {
	t.Helper()
	return r.waitFor(t, kind+" of "+runID, func(m peerMsg) bool { return m.Msg == kind && m.RunID == runID })
}

// clientRun is the argument of client.mjs.
type clientRun struct {
	URL            string            `json:"url"`
	RunID          string            `json:"runId"`
	ThreadID       string            `json:"threadId"`
	Text           string            `json:"text,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	Proto          bool              `json:"proto,omitempty"`
	Abort          *clientAbort      `json:"abort,omitempty"`
	ForwardedProps runProps          `json:"forwardedProps"`
}

// runProps are the forwardedProps that choose runner.mjs's script.
type runProps struct {
	Scenario string `json:"scenario"`
	Words    int    `json:"words,omitempty"`
}

// clientAbort makes the client leave after After TEXT_MESSAGE_CONTENT
// events, the way How names (client.mjs).
type clientAbort struct {
	How   string `json:"how"`
	After int    `json:"after"`
}

// startNodeClient runs one run through the official client.
func startNodeClient(t testing.TB, run clientRun) *peer {
	t.Helper()
	arg, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	return startPeer(t, "node client "+run.RunID, "client.mjs", string(arg))
}

// result waits for the client's result.
func (p *peer) result(t testing.TB) peerMsg {
	t.Helper()
	return p.waitFor(t, "its result", func(m peerMsg) bool { return m.Msg == "result" })
}

func (e *clientError) String() string {
	return fmt.Sprintf("%s: %q (HTTP %d, body %s)", e.Name, e.Message, e.Status, e.Payload)
}
