package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/session"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/demorunner"
	"github.com/ambient-code/control-plane/services/runner-manager/internal/runner"
)

// Issue 14 finding 3: a prompt over 128 KiB could not start at all
// (INITIAL_PROMPT exceeds the kernel's limit for one environment entry:
// "argument list too long"). A 1 MiB prompt now reaches the runner whole,
// through a 0600 file in its workspace; it is not in the environment.
func TestLargePromptReachesRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rp := e.replica(replicaOpts{})
	prompt := strings.Repeat("a large prompt ", (1<<20)/15+1)[:1<<20]
	s := e.create("big prompt", func(r *ambientv1.CreateSessionRequest) { r.Prompt = proto.String(prompt) })
	id := s.GetMetadata().GetId()
	e.handle(rp, added, s)
	e.waitPhase(id, session.PhaseRunning, 5*time.Second)
	rec := e.startedRecord(id)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+rec.Addr()+"/debug/stats", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st demorunner.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(prompt))
	if st.InitialPromptBytes != len(prompt) || st.InitialPromptSHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("runner got a %d-byte prompt (sha256 %s), want %d bytes", st.InitialPromptBytes, st.InitialPromptSHA256, len(prompt))
	}
	fi, err := os.Stat(filepath.Join(rp.root, id, runner.PromptFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("prompt file mode %v, want 0600", fi.Mode().Perm())
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(rec.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(environ), runner.EnvPrompt+"=") {
		t.Fatal("a 1 MiB prompt in the runner's environment")
	}
}
