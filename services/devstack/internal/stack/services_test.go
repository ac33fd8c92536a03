package stack

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// TestKubeReconcilerLeavesSessionsToLocalRunners: with --kubeconfig alone
// the stack must not run every session twice (AgenticSession + runner).
func TestKubeReconcilerLeavesSessionsToLocalRunners(t *testing.T) {
	k := filepath.Join(t.TempDir(), "kubeconfig") // kube-reconciler wants an existing file
	if err := os.WriteFile(k, []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string // KUBE_SESSION_SELECTOR; "" = no kube-reconciler
	}{
		{nil, ""},
		{[]string{"--kubeconfig", k}, "none"},
		{[]string{"--kubeconfig", k, "--kube-sessions", "projects=team-a"}, "projects=team-a"},
	}
	for _, tc := range tests {
		c, err := ParseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("ParseFlags(%q): %v", tc.args, err)
		}
		var kube *service
		for _, s := range c.services() {
			if s.name == "kube-reconciler" {
				kube = &s
			}
			if _, ok := s.env["AMBIENT_API_SERVER_URL"]; ok {
				t.Errorf("%s gets AMBIENT_API_SERVER_URL, which no service reads", s.name)
			}
		}
		switch {
		case tc.want == "" && kube != nil:
			t.Errorf("%q: kube-reconciler runs without a kubeconfig", tc.args)
		case tc.want != "" && kube == nil:
			t.Errorf("%q: no kube-reconciler", tc.args)
		case kube != nil && kube.env["KUBE_SESSION_SELECTOR"] != tc.want:
			t.Errorf("%q: KUBE_SESSION_SELECTOR = %q, want %q", tc.args, kube.env["KUBE_SESSION_SELECTOR"], tc.want)
		}
	}
}

// runnerManagerEnv is the environment devstack gives runner-manager.
func runnerManagerEnv(t *testing.T, c Config) map[string]string {
	t.Helper()
	for _, s := range c.services() {
		if s.name == "runner-manager" {
			return s.env
		}
	}
	t.Fatal("no runner-manager in the stack")
	return nil
}

// TestRunnerCommandIsACommandLine: --runner-command reaches runner-manager
// as a command line that runner-manager splits exactly as the user wrote
// it (issue 11 point 5: it used to be quoted into one program path), and
// the default demo runner path is absolute and one word even for a
// relative --bin-dir or one with spaces (issue 16 point 5).
func TestRunnerCommandIsACommandLine(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		binDir  string   // want Config.BinDir
		want    []string // LOCAL_RUNNER_COMMAND as runner-manager splits it (before path resolution)
		wantErr bool
	}{
		{name: "relative bin dir", args: []string{"--bin-dir", "bin"}, binDir: filepath.Join(wd, "bin"),
			want: []string{filepath.Join(wd, "bin", "demo-runner")}},
		{name: "bin dir with a space", args: []string{"--bin-dir", "/opt/my bins/"}, binDir: "/opt/my bins",
			want: []string{"/opt/my bins/demo-runner"}},
		{name: "interpreter, script and quoted arguments", args: []string{"--runner-command", `node runner.mjs --greeting 'hello there' "x y"`},
			binDir: "", want: []string{"node", "runner.mjs", "--greeting", "hello there", "x y"}},
		{name: "the original's default", args: []string{"--runner-command", "python local_entry.py"},
			want: []string{"python", "local_entry.py"}},
		{name: "unterminated quote", args: []string{"--runner-command", "python 'x"}, wantErr: true},
		{name: "blank", args: []string{"--runner-command", "  "}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var usage bytes.Buffer
			c, err := ParseFlags(tc.args, &usage)
			if tc.wantErr {
				if err == nil || !strings.Contains(usage.String(), "--runner-command") {
					t.Fatalf("ParseFlags(%q) = %v, output %q; want an error naming --runner-command", tc.args, err, usage.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFlags(%q): %v", tc.args, err)
			}
			if tc.binDir != "" && c.BinDir != tc.binDir {
				t.Errorf("BinDir = %q, want %q", c.BinDir, tc.binDir)
			}
			if !filepath.IsAbs(c.BinDir) {
				t.Errorf("BinDir %q is relative", c.BinDir)
			}
			line := runnerManagerEnv(t, c)["LOCAL_RUNNER_COMMAND"]
			got, err := envconfig.ParseCommand(line)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("LOCAL_RUNNER_COMMAND %q splits into %q (%v), want %q", line, got, err, tc.want)
			}
		})
	}
}

// TestMissingRunnerProgramFailsAtStart: a --runner-command whose program
// does not exist stops devstack before anything starts, instead of failing
// every session later.
func TestMissingRunnerProgramFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, b := range []string{"memapi", "informer", "event-tally", "runner-manager", "agui-proxy"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, line := range []string{"no-such-interpreter-xyz runner.mjs", "./no/such/runner --x"} {
		c, err := ParseFlags([]string{"--bin-dir", dir, "--runner-command", line}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		err = checkBinaries(c)
		if err == nil || !strings.Contains(err.Error(), "--runner-command") {
			t.Errorf("checkBinaries with %q = %v, want an error naming --runner-command", line, err)
		}
	}
	c, err := ParseFlags([]string{"--bin-dir", dir, "--runner-command", "sh -c 'exit 0'"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBinaries(c); err != nil {
		t.Errorf("checkBinaries with sh: %v", err)
	}
}

// TestRunnerManagerStopsRunnersWithinStopGrace: runner-manager ends its
// runners' process groups (SIGTERM, SIGKILL after LOCAL_STOP_GRACE) before
// it exits; devstack gives it --stop-grace before its own SIGKILL. With
// runner-manager's default 10 s and a shorter --stop-grace, runner-manager
// was killed first and a runner's child ignoring SIGTERM outlived the stack.
func TestRunnerManagerStopsRunnersWithinStopGrace(t *testing.T) {
	for _, grace := range []string{"20s", "4s", "1s", "3ns"} {
		c, err := ParseFlags([]string{"--stop-grace", grace}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := runnerManagerEnv(t, c)["LOCAL_STOP_GRACE"]
		if !ok {
			v = "10s" // runner-manager's default
		}
		runners, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("--stop-grace %s: LOCAL_STOP_GRACE %q: %v", grace, v, err)
		}
		if runners <= 0 || runners >= c.StopGrace {
			t.Errorf("--stop-grace %s: runner-manager's LOCAL_STOP_GRACE is %s, want > 0 and < %s", grace, runners, c.StopGrace)
		}
	}
}

// TestRunnersSendTheFirstPromptThroughTheProxy: runner-manager tells its
// runners (RUNNER_BACKEND_API_URL, passed on as BACKEND_API_URL) to send
// their first prompt to the stack's agui-proxy, which routes the platform
// backend's run path to the runner's own POST /; without it the platform's
// runner never runs INITIAL_PROMPT. Before, it was unset.
func TestRunnersSendTheFirstPromptThroughTheProxy(t *testing.T) {
	c, err := ParseFlags([]string{"--proxy-port", "18123"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := runnerManagerEnv(t, c)["RUNNER_BACKEND_API_URL"], c.ProxyURL(); got != want || !strings.HasSuffix(got, ":18123") {
		t.Fatalf("RUNNER_BACKEND_API_URL = %q, want agui-proxy's %q", got, want)
	}
}

// TestEachServiceNamesItself: children inherit devstack's environment, so
// an OTEL_SERVICE_NAME exported in the shell would name every service of
// the stack alike in its traces; devstack clears it for each child.
func TestEachServiceNamesItself(t *testing.T) {
	c, err := ParseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.services() {
		if v, ok := s.env["OTEL_SERVICE_NAME"]; !ok || v != "" {
			t.Errorf("%s: OTEL_SERVICE_NAME = %q (set: %v), want set and empty", s.name, v, ok)
		}
	}
}
