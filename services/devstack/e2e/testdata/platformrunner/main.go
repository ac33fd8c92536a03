// Command platformrunner stands in for the platform's runner
// (ambient-code/platform components/runners/ambient-runner) in the
// end-to-end tests, as far as its first prompt goes: it serves GET /health
// and POST / on AGUI_HOST:AGUI_PORT and, unless IS_RESUME=true, POSTs
// INITIAL_PROMPT as a run to
// BACKEND_API_URL/projects/PROJECT_NAME/agentic-sessions/SESSION_ID/agui/run
// with "Authorization: Bearer BOT_TOKEN" when set, retrying while the
// backend is not ready (5xx, 401), as the platform's runner does. What it
// learns goes to files in WORKSPACE_PATH for the test to read:
// starts.log gets one line per start ("resume=<IS_RESUME>"), received.jsonl
// one JSON line per POST / (the run's messages), prompt.log the outcome of
// the first prompt's POST. No model: each run is answered with
// RUN_STARTED and RUN_FINISHED.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "platformrunner:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	id, ws := os.Getenv("SESSION_ID"), os.Getenv("WORKSPACE_PATH")
	resume := os.Getenv("IS_RESUME") == "true"
	if err := appendLine(filepath.Join(ws, "starts.log"), fmt.Sprintf("resume=%v", resume)); err != nil {
		return err
	}
	host := os.Getenv("AGUI_HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, os.Getenv("AGUI_PORT")))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var mu sync.Mutex // serialises appends to received.jsonl
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "healthy", "session_id": id})
	})
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			ThreadID string            `json:"threadId"`
			RunID    string            `json:"runId"`
			Messages []json.RawMessage `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		line, err := json.Marshal(map[string]any{"threadId": in.ThreadID, "runId": in.RunID, "messages": in.Messages})
		if err == nil {
			mu.Lock()
			err = appendLine(filepath.Join(ws, "received.jsonl"), string(line))
			mu.Unlock()
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{"RUN_STARTED", "RUN_FINISHED"} {
			fmt.Fprintf(w, "data: {\"type\":%q,\"threadId\":%q,\"runId\":%q}\n\n", ev, in.ThreadID, in.RunID)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if prompt := strings.TrimSpace(os.Getenv("INITIAL_PROMPT")); prompt != "" && !resume {
		go func() {
			_ = appendLine(filepath.Join(ws, "prompt.log"), sendPrompt(ctx, id, prompt))
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shut)
}

// sendPrompt POSTs prompt as the platform's runner does and returns what
// came of it.
func sendPrompt(ctx context.Context, id, prompt string) string {
	backend, project := strings.TrimRight(os.Getenv("BACKEND_API_URL"), "/"), strings.TrimSpace(os.Getenv("PROJECT_NAME"))
	if backend == "" || project == "" {
		return "Cannot auto-execute INITIAL_PROMPT: BACKEND_API_URL or PROJECT_NAME not set"
	}
	url := backend + "/projects/" + project + "/agentic-sessions/" + id + "/agui/run"
	body, err := json.Marshal(map[string]any{"threadId": id, "runId": newID(), "messages": []map[string]any{{
		"id": newID(), "role": "user", "content": prompt,
		"metadata": map[string]any{"hidden": true, "autoSent": true, "source": "runner_initial_prompt"},
	}}})
	if err != nil {
		return err.Error()
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; attempt <= 30; attempt++ {
		status, text, err := post(ctx, url, body)
		switch {
		case err == nil && status == http.StatusOK:
			return "INITIAL_PROMPT auto-execution started"
		case err == nil && status < 500 && status != http.StatusUnauthorized && !strings.Contains(strings.ToLower(text), "not available"):
			return fmt.Sprintf("INITIAL_PROMPT failed with status %d: %s", status, text)
		}
		select {
		case <-ctx.Done():
			return "INITIAL_PROMPT abandoned: " + ctx.Err().Error()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	return "INITIAL_PROMPT auto-execution failed after 30 attempts"
}

func post(ctx context.Context, url string, body []byte) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := strings.TrimSpace(os.Getenv("BOT_TOKEN")); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	text, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(text), err
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, line)
	return errors.Join(err, f.Close())
}
