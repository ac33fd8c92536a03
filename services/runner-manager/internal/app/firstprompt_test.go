package app_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestRunnersToldWhereToSendTheFirstPrompt: what the platform's runner
// needs to run its session's first prompt, as the platform's operator
// gives it, reaches the real runner process of a real service:
// BACKEND_API_URL (RUNNER_BACKEND_API_URL) and BOT_TOKEN (read from
// RUNNER_BOT_TOKEN_FILE, trimmed), where and with what token it POSTs
// INITIAL_PROMPT; AGENTIC_SESSION_NAME is the session's AgenticSession
// name (kube_cr_name, which the API sets to the id, lower-cased), not its
// display name, while BOSS_AGENT_NAME stays the display name's slug; and
// IS_RESUME=true only for a start after the session ran (stopped, started
// again), so the runner does not send the first prompt twice. Before,
// BACKEND_API_URL, BOT_TOKEN and IS_RESUME were never passed and
// AGENTIC_SESSION_NAME was "First Prompt Demo".
func TestRunnersToldWhereToSendTheFirstPrompt(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tokenFile := filepath.Join(t.TempDir(), "bot-token")
	if err := os.WriteFile(tokenFile, []byte("  bot-secret-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// One port, which the session gets again when it is started again:
	// without PORT_REUSE_DELAY=0 its restart would wait out the delay
	// (TestReleasedPortWaitsOutReuseDelay).
	w.start("rm-prompt", 1, "RUNNER_BACKEND_API_URL=http://127.0.0.1:8080/api", "RUNNER_BOT_TOKEN_FILE="+tokenFile, "PORT_REUSE_DELAY=0")
	id := w.create("First Prompt Demo")
	w.waitAll([]string{id}, "Running", 20*time.Second)
	env := w.runnerEnv(id)
	for k, want := range map[string]string{"BACKEND_API_URL": "http://127.0.0.1:8080/api", "BOT_TOKEN": "bot-secret-123",
		"AGENTIC_SESSION_NAME": strings.ToLower(id), "BOSS_AGENT_NAME": "first-prompt-demo", "PROJECT_NAME": "proj", "SESSION_ID": id} {
		if env[k] != want {
			t.Errorf("first run: %s = %q, want %q", k, env[k], want)
		}
	}
	if v, ok := env["IS_RESUME"]; ok {
		t.Errorf("first run: IS_RESUME = %q, want unset (the first prompt must run)", v)
	}

	rest, err := apiclient.NewREST(apiclient.RESTConfig{URL: w.api.RESTURL(), Token: w.api.Token()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest.StopSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	w.waitAll([]string{id}, "Stopped", 20*time.Second)
	if _, err := rest.StartSession(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	w.waitAll([]string{id}, "Running", 20*time.Second)
	env = w.runnerEnv(id)
	if env["IS_RESUME"] != "true" || env["BACKEND_API_URL"] != "http://127.0.0.1:8080/api" || env["AGENTIC_SESSION_NAME"] != strings.ToLower(id) {
		t.Errorf("started again: IS_RESUME %q BACKEND_API_URL %q AGENTIC_SESSION_NAME %q, want true, the URL, %q",
			env["IS_RESUME"], env["BACKEND_API_URL"], env["AGENTIC_SESSION_NAME"], strings.ToLower(id))
	}
}

// runnerEnv is the environment the runner process of session id (the one
// its record names) was started with.
func (w *world) runnerEnv(id string) map[string]string {
	w.t.Helper()
	var raw []byte
	// Running is written after the record names the runner's pid; the
	// record is read until it does, as the phase may be read first.
	testenv.Eventually(w.t, 10*time.Second, func() error {
		rec, err := w.record(id)
		if err != nil {
			return err
		}
		raw, err = os.ReadFile("/proc/" + strconv.Itoa(rec.PID) + "/environ")
		return err
	})
	env := map[string]string{}
	for kv := range strings.SplitSeq(strings.TrimRight(string(raw), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}
