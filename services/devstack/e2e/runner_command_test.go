package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// runnerScript is a runner run by an interpreter: it checks the arguments
// its command line gave it, leaves the greeting in its working directory
// (the session workspace), then becomes the demo runner named by its last
// argument. POSIX sh, so it runs on any CI machine.
const runnerScript = `#!/bin/sh
if [ "$#" -ne 3 ] || [ "$1" != --greeting ]; then
	echo "unexpected arguments ($#): $*" >&2
	exit 3
fi
printf '%s\n' "$2" > greeting.txt
exec "$3"
`

// TestRunnerCommandLine is acceptance 5 of issue 11: --runner-command takes a
// command line exactly as LOCAL_RUNNER_COMMAND does, here an interpreter, a
// script path with a space (quoted) and quoted arguments. devstack runs
// from another directory with a relative --bin-dir (issue 16 point 5), and
// the script and the demo runner are named by paths relative to it: they
// still resolve although each runner runs in its own workspace. The session
// reaches Running and a chat streams through the proxy.
func TestRunnerCommandLine(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	wd := t.TempDir()
	script := filepath.Join(wd, "runners", "my runner.sh")
	if err := os.MkdirAll(filepath.Dir(script), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(runnerScript), 0o600); err != nil { // read by sh, not executed
		t.Fatal(err)
	}
	relBin, err := filepath.Rel(wd, binDir)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf(`sh 'runners/my runner.sh' --greeting "hello there" %s`, filepath.Join(relBin, "demo-runner"))
	s := startStackWith(t, stackOpts{dir: wd, args: []string{"--bin-dir", relBin, "--runner-command", line}})

	s.rest(http.MethodPost, "/projects", map[string]any{"name": "cmdline"})
	id := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "scripted", "project_id": "cmdline"}))
	s.waitPhase(id, 60*time.Second, "Running")

	greeting, err := os.ReadFile(filepath.Join(s.stateDir, "workspaces", id, "greeting.txt"))
	if err != nil {
		t.Fatalf("the script did not run in the session workspace: %v", err)
	}
	if got := strings.TrimSpace(string(greeting)); got != "hello there" {
		t.Fatalf("script got greeting %q, want %q", got, "hello there")
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		out, err := s.ambientctl("chat", id, "through a scripted runner")
		if err != nil {
			return fmt.Errorf("chat: %w: %s", err, out)
		}
		if !strings.Contains(out, "through a scripted runner") {
			return fmt.Errorf("chat output %q", out)
		}
		return nil
	})
	s.rest(http.MethodPost, "/sessions/"+id+"/stop", nil)
	s.waitPhase(id, 30*time.Second, "Stopped")
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := len(runnerPIDs(id)); n != 0 {
			return fmt.Errorf("%d runner processes left after stop", n)
		}
		return nil
	})
}
