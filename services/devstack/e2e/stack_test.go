package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/ambient-code/control-plane/libs/testenv"
)

const token = "e2e-token"

// stack is a running devstack process.
type stack struct {
	t         *testing.T
	cmd       *exec.Cmd
	out       *testenv.Buffer
	stateDir  string
	natsPort  int
	grpcPort  int
	restPort  int
	proxyPort int
	base      int
}

// stackOpts changes how startStackWith runs devstack.
type stackOpts struct {
	dir  string   // devstack's working directory; "" = the test's
	args []string // extra flags after the defaults (a repeated flag wins)
	env  []string // added to the test's environment, which every child inherits
}

func startStack(t *testing.T) *stack {
	t.Helper()
	return startStackWith(t, stackOpts{})
}

func startStackWith(t *testing.T, o stackOpts) *stack {
	t.Helper()
	// Every port of the stack from one block below the ephemeral range
	// (testenv.FreePortRange), so no two of them coincide and no outgoing
	// connection takes one first: NATS, API gRPC, API REST, proxy, then
	// base..base+5 (the services' health/metrics ports are base+1..base+5),
	// then 50 runner ports.
	p, _ := testenv.FreePortRange(t, 4+6+50)
	s := &stack{t: t, out: &testenv.Buffer{}, stateDir: t.TempDir(),
		natsPort: p, grpcPort: p + 1, restPort: p + 2, proxyPort: p + 3, base: p + 4}
	lo := p + 10
	s.cmd = exec.Command(filepath.Join(binDir, "devstack"),
		"--bin-dir", binDir, "--state-dir", s.stateDir, "--token", token,
		"--nats-port", strconv.Itoa(s.natsPort), "--api-grpc-port", strconv.Itoa(s.grpcPort),
		"--api-rest-port", strconv.Itoa(s.restPort), "--proxy-port", strconv.Itoa(s.proxyPort),
		"--metrics-port-base", strconv.Itoa(s.base), "--runner-ports", fmt.Sprintf("%d-%d", lo, lo+49),
		"--raw-logs", "--stop-grace", "15s")
	s.cmd.Args = append(s.cmd.Args, o.args...)
	s.cmd.Dir = o.dir
	if len(o.env) > 0 {
		s.cmd.Env = append(os.Environ(), o.env...)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("devstack output:\n%s", s.out.String())
		}
	})
	testenv.Eventually(t, 120*time.Second, func() error {
		if strings.Contains(s.out.String(), "ambient control plane is running") {
			return nil
		}
		if s.cmd.ProcessState != nil {
			return fmt.Errorf("devstack exited: %s", s.cmd.ProcessState)
		}
		return fmt.Errorf("not running yet")
	})
	return s
}

// stop is Ctrl-C: SIGINT to devstack, which must stop every service and
// every runner.
func (s *stack) stop() {
	if s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // it may be gone already
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }() // owned by stop; Wait returns when devstack exits
	select {
	case err := <-done:
		if err != nil {
			s.t.Errorf("devstack exit: %v", err)
		}
	case <-time.After(90 * time.Second):
		_ = s.cmd.Process.Kill() //nolint:errcheck // test teardown
		s.t.Errorf("devstack did not stop within 90s")
	}
}

func (s *stack) restURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d/api/ambient/v1%s", s.restPort, path)
}

// rest calls the in-memory API's REST interface and decodes the JSON answer.
func (s *stack) rest(method, path string, body any) map[string]any {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.restURL(path), r)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()         //nolint:errcheck // read-only
	raw, _ := io.ReadAll(resp.Body) //nolint:errcheck // checked via status
	if resp.StatusCode >= 300 {
		s.t.Fatalf("%s %s: %s %s", method, path, resp.Status, raw)
	}
	out := map[string]any{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			s.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return out
}

func (s *stack) session(id string) map[string]any {
	s.t.Helper()
	return s.rest(http.MethodGet, "/sessions/"+id, nil)
}

func (s *stack) waitPhase(id string, timeout time.Duration, phases ...string) map[string]any {
	s.t.Helper()
	var got map[string]any
	testenv.Eventually(s.t, timeout, func() error {
		got = s.session(id)
		for _, p := range phases {
			if got["phase"] == p {
				return nil
			}
		}
		return fmt.Errorf("session %s phase %v, want one of %v (conditions %v)", id, got["phase"], phases, got["conditions"])
	})
	return got
}

func (s *stack) ambientctl(args ...string) (string, error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := s.ambientctlCmd(ctx, nil, args...).CombinedOutput()
	return string(out), err
}

// ambientctlCmd is the ambientctl command line aimed at the stack, with env
// added to the test's environment, killed when ctx ends.
func (s *stack) ambientctlCmd(ctx context.Context, env []string, args ...string) *exec.Cmd {
	full := append([]string{
		"--api", fmt.Sprintf("127.0.0.1:%d", s.grpcPort), "--token", token,
		"--rest", fmt.Sprintf("http://127.0.0.1:%d", s.restPort),
		"--proxy", fmt.Sprintf("http://127.0.0.1:%d", s.proxyPort),
		"--nats", fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort),
		"--tally-url", fmt.Sprintf("http://127.0.0.1:%d", s.base+4),
	}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "ambientctl"), full...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	return cmd
}

// pid reads the pid file devstack keeps for a service.
func (s *stack) pid(name string) int {
	s.t.Helper()
	n, err := s.pidOf(name)
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

// pidOf reads the pid devstack wrote for the service; safe inside
// Eventually (it reports, never fails the test).
func (s *stack) pidOf(name string) (int, error) {
	path := filepath.Join(s.stateDir, "run", name+".pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", path, err)
	}
	return n, nil
}

// runnerPIDs lists live processes whose environment has SESSION_ID=id: the
// session's runners, wherever they came from.
func runnerPIDs(id string) []int {
	want := "SESSION_ID=" + id
	var pids []int
	all, _ := procfs.AllProcs() //nolint:errcheck // an unreadable /proc lists nothing
	for _, p := range all {
		env, err := p.Environ()
		if err != nil || !slices.Contains(env, want) {
			continue
		}
		if st, err := p.Stat(); err == nil && st.State == "Z" {
			continue // zombie: exited, not yet reaped
		}
		pids = append(pids, p.PID)
	}
	return pids
}
