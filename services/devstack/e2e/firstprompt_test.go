package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestPlatformRunnerFirstPromptReachesItsRunner: a runner that behaves
// like the platform's (testdata/platformrunner: on start it POSTs
// INITIAL_PROMPT to BACKEND_API_URL/projects/<project>/agentic-sessions/
// <id>/agui/run, as ambient-runner does) gets its session's first prompt
// back on its own POST /, through the stack's agui-proxy: `make run` passes
// runner-manager agui-proxy's URL (RUNNER_BACKEND_API_URL), which it hands
// on as BACKEND_API_URL. Once, and not again when the session is started
// after a stop: its runner is then told IS_RESUME=true. Before, the runner
// got no BACKEND_API_URL and the prompt never ran.
func TestPlatformRunnerFirstPromptReachesItsRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := startStackWith(t, stackOpts{args: []string{"--runner-command", filepath.Join(binDir, "platformrunner")}})
	s.rest(http.MethodPost, "/projects", map[string]any{"name": "e2e"})
	const prompt = "first prompt, sent by the runner itself"
	id := idOf(s.rest(http.MethodPost, "/sessions", map[string]any{"name": "platform runner", "project_id": "e2e", "prompt": prompt}))
	s.waitPhase(id, 60*time.Second, "Running")
	ws := filepath.Join(s.stateDir, "workspaces", id)
	var runs []string
	testenv.Eventually(t, 60*time.Second, func() error {
		runs = lines(filepath.Join(ws, "received.jsonl"))
		if len(runs) == 0 {
			return fmt.Errorf("no run reached the runner yet; its first prompt: %q", lines(filepath.Join(ws, "prompt.log")))
		}
		return nil
	})
	var run struct {
		ThreadID string `json:"threadId"`
		Messages []struct {
			Role     string         `json:"role"`
			Content  string         `json:"content"`
			Metadata map[string]any `json:"metadata"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(runs[0]), &run); err != nil {
		t.Fatalf("run %s: %v", runs[0], err)
	}
	if run.ThreadID != id || len(run.Messages) != 1 || run.Messages[0].Role != "user" || run.Messages[0].Content != prompt ||
		run.Messages[0].Metadata["source"] != "runner_initial_prompt" {
		t.Fatalf("the runner's POST / got %s, want its first prompt %q as the one user message of thread %s", runs[0], prompt, id)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := lines(filepath.Join(ws, "prompt.log")); len(got) != 1 || got[0] != "INITIAL_PROMPT auto-execution started" {
			return fmt.Errorf("first prompt's POST: %q", got)
		}
		return nil
	})

	// Stopped and started again: the new runner is a resume and sends no
	// prompt (the platform's runner would run it a second time).
	s.rest(http.MethodPost, "/sessions/"+id+"/stop", nil)
	s.waitPhase(id, 30*time.Second, "Stopped")
	s.rest(http.MethodPost, "/sessions/"+id+"/start", nil)
	s.waitPhase(id, 60*time.Second, "Running")
	// The runner writes starts.log before it listens, and it is Running
	// only once it answered /health.
	if got := lines(filepath.Join(ws, "starts.log")); len(got) != 2 || got[0] != "resume=false" || got[1] != "resume=true" {
		t.Fatalf("starts.log %q, want a first start and a resume", got)
	}
	if got := lines(filepath.Join(ws, "received.jsonl")); len(got) != 1 {
		t.Fatalf("the runner got %d runs, want only the first prompt's: %q", len(got), got)
	}
	if got := lines(filepath.Join(ws, "prompt.log")); len(got) != 1 {
		t.Fatalf("prompt.log %q: the resumed runner sent its prompt again", got)
	}
}

// lines returns the lines of the file at path (none when it does not exist).
func lines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}
