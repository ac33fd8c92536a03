package app_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// nobody is the unprivileged user the service runs as when the tests run
// as root (a root runner has CAP_SYS_PTRACE and reads any process).
const nobody = 65534

// hostileResult is testdata/hostile's report.
type hostileResult struct {
	ParentEnviron   string            `json:"parent_environ"`
	ParentMem       string            `json:"parent_mem"`
	OtherWorkspaces map[string]string `json:"other_workspaces"`
	OtherRunners    []int             `json:"other_runners"`
}

// Issue 12, runner hygiene: a hostile runner tries to read runner-manager's
// environment and memory, another session's workspace, and to reach
// another session's runner. Runner-manager is non-dumpable, so the first
// two fail (they succeeded before: same user, dumpable). The rest cannot
// be prevented for runners that share runner-manager's user and network
// namespace; the test records them, docs/operations.md says so, and checks
// what is enforceable against other users: workspaces 0700, prompt and
// log files 0600, secrets from files (never in the environment).
func TestHostileRunner(t *testing.T) {
	w := newWorld(t)
	base, err := os.MkdirTemp("", "hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(base); err != nil {
			t.Error(err)
		}
	})
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	root, tokenFile := filepath.Join(base, "workspaces"), filepath.Join(base, "token")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(w.api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := startOpts{root: root, tokenFile: tokenFile}
	if os.Geteuid() == 0 {
		o.cred = &syscall.Credential{Uid: nobody, Gid: nobody}
		for _, p := range []string{root, tokenFile} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
	}
	const canary = "CANARY_SECRET=do-not-leak-3f9a"
	w.startWith("rm-0", 5, o, "LOCAL_RUNNER_COMMAND="+hostileBin, canary)
	create := func(name, prompt string) string {
		s, err := w.client.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: name, ProjectId: proto.String("proj"), Prompt: proto.String(prompt)})
		if err != nil {
			t.Fatal(err)
		}
		return s.GetMetadata().GetId()
	}
	victim := create("victim", "the victim's secret prompt")
	w.waitAll([]string{victim}, "Running", 15*time.Second)
	attacker := create("attacker", "attack")
	w.waitAll([]string{attacker}, "Running", 15*time.Second)
	var r hostileResult
	testenv.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(root, attacker, "hostile.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &r)
	})

	// Enforced: runner-manager's environment and memory.
	if !strings.HasPrefix(r.ParentEnviron, "denied") {
		leaked := strings.Contains(r.ParentEnviron, canary)
		t.Errorf("a runner read runner-manager's environment (canary leaked: %v)", leaked)
	}
	if !strings.HasPrefix(r.ParentMem, "denied") {
		t.Errorf("a runner opened runner-manager's memory: %s", r.ParentMem)
	}
	// Enforced against other users: modes.
	for path, want := range map[string]os.FileMode{
		root: 0o700, filepath.Join(root, victim): 0o700, filepath.Join(root, victim, ".initial-prompt"): 0o600,
		filepath.Join(root, victim, "stdout.log"): 0o600, filepath.Join(root, victim, "stderr.log"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	// Not enforceable on a shared user and network (documented).
	t.Logf("other session's workspace: %s", r.OtherWorkspaces[victim])
	t.Logf("other runners reachable on loopback: %v", r.OtherRunners)
}
