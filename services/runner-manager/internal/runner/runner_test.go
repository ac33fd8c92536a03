package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

func TestWorkspacePath(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	tests := []struct {
		id      string
		wantErr bool
	}{
		{"abc-123", false},
		{"2pQk9x", false},
		{"..", true},
		{".", true},
		{"", true},
		{"../../etc", true},
		{"a/b", true},
		{`a\b`, true},
		{"/etc", true},
		{"a\x00b", true},
		{"..foo", false}, // a plain name that starts with dots stays inside
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			p, err := WorkspacePath(root, tc.id)
			if tc.wantErr {
				if !errors.Is(err, ErrBadSessionID) {
					t.Fatalf("WorkspacePath(%q) = %q, %v; want ErrBadSessionID", tc.id, p, err)
				}
				return
			}
			if err != nil || filepath.Dir(p) != root {
				t.Fatalf("WorkspacePath(%q) = %q, %v", tc.id, p, err)
			}
		})
	}
}

func FuzzWorkspacePath(f *testing.F) {
	for _, s := range []string{"a", "../x", "..", "a/../../b", "./.", "x\x00"} {
		f.Add(s)
	}
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, id string) {
		p, err := WorkspacePath(root, id)
		if err != nil {
			return
		}
		if filepath.Dir(p) != root || filepath.Base(p) != id {
			t.Fatalf("id %q escaped: %q", id, p)
		}
	})
}

func TestBuildEnv(t *testing.T) {
	t.Parallel()
	host := []string{"HOME=/h", "PATH=/bin", "SECRET=x", "ANTHROPIC_API_KEY=k", "GITHUB_TOKEN=g", "GITX=no",
		"LD_PRELOAD=bad", "SESSION_ID=host-value", "AWS_SECRET=s", "GIT_AUTHOR_NAME=a"}
	prompt, temp, tok := "hi there", 0.7, int32(4000)
	env := BuildEnv(host, EnvAllowList{}, Session{ID: "s1", Name: "My Session!", ProjectID: "p1", Prompt: &prompt, LLMTemperature: &temp, LLMMaxTokens: &tok,
		PromptFile: "/ws/s1/.initial-prompt"}, 9100, "/ws/s1", "http://boss", "default")
	want := []string{
		"AGENTIC_SESSION_NAME=s1", "AGUI_PORT=9100", "ANTHROPIC_API_KEY=k", "BOSS_AGENT_NAME=my-session",
		"BOSS_SPACE=default", "BOSS_URL=http://boss", "GITHUB_TOKEN=g", "GIT_AUTHOR_NAME=a", "HOME=/h", "INITIAL_PROMPT=hi there",
		"INITIAL_PROMPT_FILE=/ws/s1/.initial-prompt", "LLM_MAX_TOKENS=4000", "LLM_TEMPERATURE=0.70", "PATH=/bin", "PROJECT_NAME=p1", "SESSION_ID=s1", "WORKSPACE_PATH=/ws/s1",
	}
	want = append(want, "AGENTIC_SESSION_NAMESPACE=p1")
	slices.Sort(want)
	if !slices.Equal(env, want) {
		t.Fatalf("env:\n got %q\nwant %q", env, want)
	}
}

// TestBuildEnvInheritsTheOriginalAllowList: a runner inherits exactly the
// original local mode's host variables: the prefixes ANTHROPIC_ CLAUDE_
// GOOGLE_ GITHUB_ GITLAB_ GIT_ and the names HOME PATH USER SHELL LANG
// LC_ALL TMPDIR GOPATH GOROOT SSH_AUTH_SOCK; lookalikes stay behind. The
// session's timeout reaches it as SESSION_TIMEOUT.
func TestBuildEnvInheritsTheOriginalAllowList(t *testing.T) {
	t.Parallel()
	inherited := []string{"ANTHROPIC_X=1", "CLAUDE_X=1", "GOOGLE_X=1", "GITHUB_X=1", "GITLAB_X=1", "GIT_X=1",
		"HOME=1", "PATH=1", "USER=1", "SHELL=1", "LANG=1", "LC_ALL=1", "TMPDIR=1", "GOPATH=1", "GOROOT=1", "SSH_AUTH_SOCK=1"}
	dropped := []string{"ANTHROPIC=1", "CLAUDEX=1", "GOOGLE=1", "GITLABX=1", "HOMEDIR=1", "TMPDIR_X=1", "LC_CTYPE=1",
		"SSH_AGENT_PID=1", "GOFLAGS=1", "XDG_RUNTIME_DIR=1"}
	timeout := int32(600)
	env := BuildEnv(append(slices.Clone(inherited), dropped...), EnvAllowList{}, Session{ID: "s1", Timeout: &timeout}, 9100, "/ws/s1", "", "")
	for _, kv := range inherited {
		if !slices.Contains(env, kv) {
			t.Errorf("%s not inherited", kv)
		}
	}
	for _, kv := range dropped {
		if slices.Contains(env, kv) {
			t.Errorf("%s inherited", kv)
		}
	}
	if !slices.Contains(env, EnvTimeout+"=600") {
		t.Errorf("no %s=600 in %q", EnvTimeout, env)
	}
}

// A prompt over PromptEnvMax is passed only as a file.
func TestBuildEnvLargePrompt(t *testing.T) {
	t.Parallel()
	for _, n := range []int{PromptEnvMax, PromptEnvMax + 1} {
		prompt := strings.Repeat("x", n)
		env := BuildEnv(nil, EnvAllowList{}, Session{ID: "s1", Prompt: &prompt, PromptFile: "/ws/s1/.initial-prompt"}, 9100, "/ws/s1", "", "")
		inEnv := slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, EnvPrompt+"=") })
		if inEnv != (n <= PromptEnvMax) {
			t.Errorf("%d-byte prompt in %s: %v", n, EnvPrompt, inEnv)
		}
		if !slices.Contains(env, EnvPromptFile+"=/ws/s1/.initial-prompt") {
			t.Errorf("%d-byte prompt: no %s", n, EnvPromptFile)
		}
	}
}

func TestBuildEnvExtraAllowList(t *testing.T) {
	t.Parallel()
	host := []string{"PATH=/bin", "DEMO_HOST=0.0.0.0", "DEMO_REPEAT=2", "HTTPS_PROXY=http://p", "HTTPS_PROXY_X=no", "SECRET=x"}
	allow := NewEnvAllowList([]string{"HTTPS_PROXY", "DEMO_*"})
	env := BuildEnv(host, allow, Session{ID: "s1", Name: "n", ProjectID: "p"}, 9100, "/ws/s1", "", "")
	want := []string{
		"AGENTIC_SESSION_NAME=s1", "AGUI_PORT=9100", "BOSS_AGENT_NAME=n", "DEMO_HOST=0.0.0.0", "DEMO_REPEAT=2",
		"HTTPS_PROXY=http://p", "PATH=/bin", "PROJECT_NAME=p", "SESSION_ID=s1", "WORKSPACE_PATH=/ws/s1",
	}
	want = append(want, "AGENTIC_SESSION_NAMESPACE=p")
	slices.Sort(want)
	if !slices.Equal(env, want) {
		t.Fatalf("env:\n got %q\nwant %q", env, want)
	}
}

func TestSlug(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"My Session!", "my-session"}, {"  a__b  ", "a-b"}, {"ÄÖ x", "x"}, {"", ""},
		{strings.Repeat("ab-", 40), strings.TrimSuffix(strings.Repeat("ab-", 21), "-")},
	}
	for _, tc := range tests {
		if got := Slug(tc.in); got != tc.want {
			t.Errorf("Slug(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPoolSkipsBusyAndExhausts(t *testing.T) {
	t.Parallel()
	// The range is free when picked, but another test process may take one
	// of its ports before the pool does; then pick another range.
	for attempt := 1; !poolSkipsBusyAndExhausts(t); attempt++ {
		if attempt == 5 {
			t.Fatal("5 port ranges taken by others before the pool could use them")
		}
	}
	if _, err := NewPool(10, 5, ""); err == nil {
		t.Fatal("inverted range accepted")
	}
}

// poolSkipsBusyAndExhausts reports false when a port of its range was
// taken by somebody else (nothing proven, try again); it fails t otherwise.
func poolSkipsBusyAndExhausts(t *testing.T) bool {
	t.Helper()
	low, high := testenv.FreePortRange(t, 3)
	busy, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(low+1)))
	if err != nil {
		return false
	}
	defer busy.Close()
	p, err := NewPool(low, high, "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.Acquire(t.Context())
	if errors.Is(err, ErrNoPorts) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Acquire(t.Context())
	if errors.Is(err, ErrNoPorts) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if a == low+1 || b == low+1 || a == b {
		t.Fatalf("got ports %d %d, busy %d", a, b, low+1)
	}
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("third acquire: %v, want ErrNoPorts", err)
	}
	p.Release(a)
	if c, err := p.Acquire(t.Context()); err != nil || c != a {
		t.Fatalf("after release: %d %v, want %d", c, err, a)
	}
	return true
}

func newManager(t *testing.T, cmd []string, max, ports int) *Manager {
	t.Helper()
	low, high := testenv.FreePortRange(t, ports)
	pool, err := NewPool(low, high, "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{
		Command: cmd, WorkspaceRoot: t.TempDir(), MaxSessions: max, StopGrace: 300 * time.Millisecond,
		HostEnv: []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "SECRET_TOKEN=x", "GITHUB_TOKEN=gh"},
	}, pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Second)
		defer cancel()
		if err := m.StopAll(ctx); err != nil {
			t.Errorf("stop all: %v", err)
		}
		m.Wait()
	})
	return m
}

var fastHealth = HealthPolicy{Host: "127.0.0.1", Interval: 100 * time.Millisecond, Attempts: 30, FirstDelay: 10 * time.Millisecond}

func waitDone(t *testing.T, p *Process, d time.Duration) ExitStatus {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(d):
		t.Fatalf("runner %s did not exit within %v", p.SessionID, d)
		return ExitStatus{}
	}
}

// TestStopAllAsksBeforeKilling: shutdown sends SIGTERM to every runner
// and kills only what is left after the grace (the original's order), so a
// runner that handles SIGTERM ends on its own terms: here it writes a file
// and exits 0. The grace is long; the runners' exits end StopAll.
func TestStopAllAsksBeforeKilling(t *testing.T) {
	t.Parallel()
	cmd := []string{"/bin/sh", "-c", `trap 'echo term > term; exit 0' TERM; echo ready > ready; while :; do sleep 0.05; done`}
	m := newManager(t, cmd, 2, 4)
	m.cfg.StopGrace = time.Minute
	var procs []*Process
	for _, id := range []string{"s1", "s2"} {
		p, err := m.Start(t.Context(), Session{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		// The trap is set once the shell has written ready.
		testenv.Eventually(t, 5*time.Second, func() error {
			_, err := os.Stat(filepath.Join(p.Workspace, "ready"))
			return err
		})
	}
	if err := m.StopAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		st := waitDone(t, p, 5*time.Second)
		if _, err := os.Stat(filepath.Join(p.Workspace, "term")); err != nil || st.Signal != "" || st.Code != 0 {
			t.Errorf("%s: term file %v, exit %+v; want the file and exit 0 (SIGTERM handled)", p.SessionID, err, st)
		}
	}
}

func TestDemoRunnerLifecycle(t *testing.T) {
	t.Parallel()
	m := newManager(t, []string{demoRunner}, 2, 4)
	p, err := m.Start(t.Context(), Session{ID: "s1", Name: "Demo", ProjectID: "proj"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(t.Context(), Session{ID: "s1"}); !errors.Is(err, ErrRunning) {
		t.Fatalf("second start: %v, want ErrRunning", err)
	}
	if _, err := p.WaitHealthy(t.Context(), http.DefaultClient, fastHealth); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{StdoutLog, StderrLog} {
		if _, err := os.Stat(filepath.Join(p.Workspace, f)); err != nil {
			t.Fatalf("log file: %v", err)
		}
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for kv := range strings.SplitSeq(strings.TrimRight(string(raw), "\x00"), "\x00") {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	want := []string{"AGENTIC_SESSION_NAME", "AGENTIC_SESSION_NAMESPACE", "AGUI_HOST", "AGUI_PORT", "BOSS_AGENT_NAME", "GITHUB_TOKEN", "HOME", "PATH", "PROJECT_NAME", "SESSION_ID", "WORKSPACE_PATH"}
	if !slices.Equal(names, want) {
		t.Fatalf("runner env names = %v, want %v", names, want)
	}
	if err := p.Stop(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st := p.Exit()
	if st.Code != 0 || !st.StopRequested {
		t.Fatalf("exit = %+v, want code 0 after stop", st)
	}
	m.Wait()
	// The slot is free at the exit; the port only once the caller says
	// nothing names it (TestPortHeldUntilReleased).
	if m.Count() != 0 || m.Pool().InUse() != 1 {
		t.Fatalf("count %d ports %d after exit, want 0 1", m.Count(), m.Pool().InUse())
	}
	p.ReleasePort()
	if m.Pool().InUse() != 0 {
		t.Fatalf("ports %d after ReleasePort", m.Pool().InUse())
	}
}

// TestPortHeldUntilReleased: a runner's port does not go back to the pool
// when the runner exits, only at ReleasePort (runner-manager calls it once
// the session's registry record no longer routes to the port), so the
// next runner cannot be given a port a client of the ended session is
// still sent to. Before, the exit released it: the next Start got it.
func TestPortHeldUntilReleased(t *testing.T) {
	t.Parallel()
	m := newManager(t, []string{demoRunner}, 2, 1)
	a, err := m.Start(t.Context(), Session{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitHealthy(t.Context(), http.DefaultClient, fastHealth); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a, 5*time.Second)
	// Exited, its port free to bind, and the slot is free: the port is not.
	if _, err := m.Start(t.Context(), Session{ID: "b"}); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("start after the exit: %v, want ErrNoPorts (port %d still taken)", err, a.Port)
	}
	a.ReleasePort()
	a.ReleasePort() // idempotent
	b, err := m.Start(t.Context(), Session{ID: "b"})
	if err != nil {
		t.Fatalf("start after ReleasePort: %v", err)
	}
	if b.Port != a.Port {
		t.Fatalf("port %d, want the released %d", b.Port, a.Port)
	}
	// Released before the exit: given back at the exit.
	b.ReleasePort()
	if m.Pool().InUse() != 1 {
		t.Fatal("a running runner's port went back to the pool")
	}
	if err := b.Stop(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitDone(t, b, 5*time.Second)
	if m.Pool().InUse() != 0 {
		t.Fatalf("ports %d after the exit of a runner released early", m.Pool().InUse())
	}
}

// TestPoolSkipsNamed: Acquire does not hand out a port that SkipNamed's
// function names (runner-manager: a registry record of this host still
// routes to it), although it is free to bind; it hands out nothing while
// the named ports cannot be read.
func TestPoolSkipsNamed(t *testing.T) {
	t.Parallel()
	low, high := testenv.FreePortRange(t, 2)
	p, err := NewPool(low, high, "")
	if err != nil {
		t.Fatal(err)
	}
	named := map[int]bool{low: true}
	var readErr error
	p.SkipNamed(func(context.Context) (map[int]bool, error) { return named, readErr })
	got, err := p.Acquire(t.Context())
	if err != nil || got != high {
		t.Fatalf("acquire: %d %v, want %d (%d is named)", got, err, high, low)
	}
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("second acquire: %v, want ErrNoPorts", err)
	}
	p.Release(high)
	readErr = errors.New("registry down")
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrPortsUnknown) {
		t.Fatalf("acquire with the named ports unknown: %v, want ErrPortsUnknown", err)
	}
	readErr, named = nil, nil
	got, err = p.Acquire(t.Context())
	switch {
	case err != nil:
		t.Fatalf("acquire once nothing is named: %v", err)
	case got == low:
	case got == high && !p.free(low):
		// Another process (a parallel test package) bound low after
		// FreePortRange saw it free: the pool rightly skipped a busy port.
		t.Logf("port %d taken by another process meanwhile; %d acquired", low, high)
	default:
		t.Fatalf("acquire once nothing is named: %d, want %d (no longer named, and free)", got, low)
	}
}

func TestMisbehavingRunners(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		check  func(t *testing.T, m *Manager, p *Process)
	}{
		{"exit 3 with stderr tail", `for i in $(seq 1 60); do echo "line $i" >&2; done; exit 3`, func(t *testing.T, _ *Manager, p *Process) {
			st := waitDone(t, p, 5*time.Second)
			if st.Code != 3 || len(st.StderrTail) != 50 || st.StderrTail[0] != "line 11" || st.StderrTail[49] != "line 60" {
				t.Fatalf("exit = code %d tail %d %q", st.Code, len(st.StderrTail), st.StderrTail)
			}
		}},
		{"exit 0", `exit 0`, func(t *testing.T, _ *Manager, p *Process) {
			if st := waitDone(t, p, 5*time.Second); st.Code != 0 || st.StopRequested {
				t.Fatalf("exit = %+v", st)
			}
		}},
		{"never healthy", `exec sleep 60`, func(t *testing.T, _ *Manager, p *Process) {
			_, err := p.WaitHealthy(t.Context(), http.DefaultClient, HealthPolicy{Host: "127.0.0.1", Interval: 20 * time.Millisecond, Attempts: 5})
			if !errors.Is(err, ErrHealthTimeout) {
				t.Fatalf("health: %v, want ErrHealthTimeout", err)
			}
		}},
		{"ignores SIGTERM", `trap "" TERM; touch ready; while :; do sleep 0.05; done`, func(t *testing.T, _ *Manager, p *Process) {
			testenv.Eventually(t, 5*time.Second, func() error {
				_, err := os.Stat(filepath.Join(p.Workspace, "ready"))
				return err
			})
			start := time.Now()
			if err := p.Stop(t.Context(), 300*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			st := p.Exit()
			if st.Signal != syscall.SIGKILL.String() || time.Since(start) < 300*time.Millisecond {
				t.Fatalf("exit = %+v after %v, want SIGKILL after the grace", st, time.Since(start))
			}
		}},
		{"no orphans", `sleep 60 & echo $! > child.pid; wait`, func(t *testing.T, _ *Manager, p *Process) {
			child := testenv.PIDFile(t, filepath.Join(p.Workspace, "child.pid"), 5*time.Second)
			if err := p.Stop(t.Context(), 2*time.Second); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				if syscall.Kill(child, 0) == nil {
					return fmt.Errorf("child %d survived", child)
				}
				return nil
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, []string{"/bin/sh", "-c", tc.script}, 1, 2)
			p, err := m.Start(t.Context(), Session{ID: "s"})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, m, p)
		})
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	t.Run("missing command", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, []string{"/nonexistent/runner"}, 1, 1)
		if _, err := m.Start(t.Context(), Session{ID: "s"}); !errors.Is(err, ErrSpawn) {
			t.Fatalf("got %v, want ErrSpawn", err)
		}
		if m.Count() != 0 || m.Pool().InUse() != 0 {
			t.Fatal("failed spawn leaked a slot or port")
		}
	})
	t.Run("capacity", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, []string{"/bin/sh", "-c", "exec sleep 60"}, 1, 3)
		if _, err := m.Start(t.Context(), Session{ID: "a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Start(t.Context(), Session{ID: "b"}); !errors.Is(err, ErrAtCapacity) {
			t.Fatalf("got %v, want ErrAtCapacity", err)
		}
	})
	t.Run("project capacity", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, []string{"/bin/sh", "-c", "exec sleep 60"}, 3, 3)
		m.cfg.MaxPerProject = 1
		a, err := m.Start(t.Context(), Session{ID: "a1", ProjectID: "A"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Start(t.Context(), Session{ID: "a2", ProjectID: "A"})
		if !errors.Is(err, ErrAtCapacity) || !errors.Is(err, ErrProjectAtCapacity) {
			t.Fatalf("second runner of project A: got %v, want ErrAtCapacity and ErrProjectAtCapacity", err)
		}
		if got := m.FreeFor("A"); got != 0 {
			t.Fatalf("FreeFor(A) = %d, want 0", got)
		}
		if got := m.FreeFor("B"); got != 1 {
			t.Fatalf("FreeFor(B) = %d, want 1 (its own cap)", got)
		}
		if _, err := m.Start(t.Context(), Session{ID: "b1", ProjectID: "B"}); err != nil {
			t.Fatalf("project B beside A's runner: %v", err)
		}
		if err := a.Stop(t.Context(), time.Second); err != nil {
			t.Fatal(err)
		}
		<-a.Done() // its slot is free once it is done (TestSlotFreeWhenDone)
		if got := m.FreeFor("A"); got != 1 {
			t.Fatalf("FreeFor(A) = %d after its runner ended, want 1", got)
		}
		if _, err := m.Start(t.Context(), Session{ID: "a2", ProjectID: "A"}); err != nil {
			t.Fatalf("project A once its runner ended: %v", err)
		}
	})
	t.Run("ports", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, []string{"/bin/sh", "-c", "exec sleep 60"}, 5, 1)
		if _, err := m.Start(t.Context(), Session{ID: "a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Start(t.Context(), Session{ID: "b"}); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("got %v, want ErrNoPorts", err)
		}
	})
	t.Run("escaping id", func(t *testing.T) {
		t.Parallel()
		m := newManager(t, []string{"/bin/sh", "-c", "exit 0"}, 1, 1)
		if _, err := m.Start(t.Context(), Session{ID: "../../etc"}); !errors.Is(err, ErrBadSessionID) {
			t.Fatalf("got %v, want ErrBadSessionID", err)
		}
		entries, err := os.ReadDir(filepath.Dir(m.cfg.WorkspaceRoot))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() == "etc" {
				t.Fatal("created a directory outside the root")
			}
		}
	})
}

// TestSlotFreeWhenDone: once a runner is Done its session slot is free
// (HasCapacity, Start), not some time after: runner-manager starts the
// sessions waiting for capacity when a runner is done, and a slot freed
// later left them waiting for the next resync (TestCapacity in
// internal/reconcile failed now and then). A runner that exited before
// Start recorded it kept its slot for good.
func TestSlotFreeWhenDone(t *testing.T) {
	t.Parallel()
	// Three ports for one slot: a port of the range that something else on
	// the host happens to hold must not fail a start.
	m := newManager(t, []string{"/bin/true"}, 1, 3)
	for i := range 50 {
		p, err := m.Start(t.Context(), Session{ID: fmt.Sprintf("s%d", i)})
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		p.ReleasePort()
		waitDone(t, p, 5*time.Second)
		if !m.HasCapacity() {
			t.Fatalf("run %d: no capacity once the only runner was done (%d running, %d ports in use)", i, m.Count(), m.Pool().InUse())
		}
	}
}

// TestListenHostFor: loopback only for a loopback advertised host, every
// interface for one agui-proxy reaches from elsewhere (a pod IP).
func TestListenHostFor(t *testing.T) {
	t.Parallel()
	for advertise, want := range map[string]string{
		"127.0.0.1": ListenLoopback, "127.0.0.2": ListenLoopback, "localhost": ListenLoopback,
		"10.1.2.3": ListenAll, "runner-0.runners.svc": ListenAll,
		// IPv6: 0.0.0.0 would not serve the address dialed, ::1 alone not
		// the health probe on 127.0.0.1.
		"fd00::1": ListenAllIPv6, "::1": ListenAllIPv6,
	} {
		if got := ListenHostFor(advertise); got != want {
			t.Errorf("ListenHostFor(%q) = %q, want %q", advertise, got, want)
		}
	}
}

// TestBuildEnvPlatformRunner: what the platform's runner needs beyond the
// original's variables. AGENTIC_SESSION_NAME is the session's AgenticSession
// name, as the platform's operator passes it (the runner makes it the
// branch ambient/<name> of repos that name none): kube_cr_name, else the
// id, lower-cased; never the display name, which may hold spaces (no valid
// branch) while BOSS_AGENT_NAME stays its slug. BACKEND_API_URL and
// BOT_TOKEN, where the runner sends its first prompt and with what token,
// and IS_RESUME=true for a session that ran before (so it does not send
// the first prompt again), only when set: each overrides a host value.
// Before, AGENTIC_SESSION_NAME was the display name and the other three
// were never passed.
func TestBuildEnvPlatformRunner(t *testing.T) {
	t.Parallel()
	host := []string{"BACKEND_API_URL=http://host", "BOT_TOKEN=host", "IS_RESUME=false"}
	allow := NewEnvAllowList([]string{"BACKEND_API_URL", "BOT_TOKEN", "IS_RESUME"})
	for _, tc := range []struct {
		name string
		s    Session
		want map[string]string // "" : not set
	}{
		{"kube_cr_name", Session{ID: "Sess1", Name: "My Demo", KubeCRName: "My-CR", BackendURL: "http://proxy:8080/api", BotToken: "tok", Resume: true},
			map[string]string{EnvSessionName: "my-cr", EnvBossAgent: "my-demo", EnvBackendURL: "http://proxy:8080/api", EnvBotToken: "tok", EnvResume: "true"}},
		{"id when no kube_cr_name", Session{ID: "2AbCdEf", Name: "spaces in name"},
			map[string]string{EnvSessionName: "2abcdef", EnvBossAgent: "spaces-in-name", EnvBackendURL: "", EnvBotToken: "", EnvResume: ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for _, kv := range BuildEnv(nil, EnvAllowList{}, tc.s, 9100, "/ws", "", "") {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			for k, want := range tc.want {
				if got, ok := env[k]; got != want || ok != (want != "") {
					t.Errorf("%s = %q (set %v), want %q", k, got, ok, want)
				}
			}
			// Session values win over the host's, even where the host's
			// are allowed through.
			over := BuildEnv(host, allow, tc.s, 9100, "/ws", "", "")
			for _, name := range []string{EnvBackendURL, EnvBotToken, EnvResume} {
				if v := tc.want[name]; v != "" && !slices.Contains(over, name+"="+v) {
					t.Errorf("with host values: %s not %q in %q", name, v, over)
				}
			}
		})
	}
}

// TestBuildEnvListenHost: the listen host reaches the runner as AGUI_HOST,
// the platform runner's variable, over any host value.
func TestBuildEnvListenHost(t *testing.T) {
	t.Parallel()
	env := BuildEnv([]string{"AGUI_HOST=0.0.0.0"}, NewEnvAllowList([]string{"AGUI_HOST"}), Session{ID: "s1", ListenHost: ListenLoopback}, 9100, "/ws/s1", "", "")
	if !slices.Contains(env, "AGUI_HOST=127.0.0.1") || slices.Contains(env, "AGUI_HOST=0.0.0.0") {
		t.Fatalf("env %v: want AGUI_HOST=127.0.0.1 only", env)
	}
}
