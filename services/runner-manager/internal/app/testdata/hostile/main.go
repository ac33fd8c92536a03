// Command hostile is a test runner that tries what a runner must not be
// able to do (issue 12: runners share runner-manager's user and network),
// writes what worked to hostile.json in its workspace, then serves /health
// like a runner until SIGTERM. It attacks only when its prompt is
// "attack"; otherwise it is an ordinary (victim) runner.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Result is what the attack found; "denied" or what was read.
type Result struct {
	ParentEnviron   string            `json:"parent_environ"`
	ParentMem       string            `json:"parent_mem"`
	OtherWorkspaces map[string]string `json:"other_workspaces"`
	OtherRunners    []int             `json:"other_runners"` // ports of other sessions' runners that answered
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	id, ws := os.Getenv("SESSION_ID"), os.Getenv("WORKSPACE_PATH")
	port, err := strconv.Atoi(os.Getenv("AGUI_PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostile: AGUI_PORT:", err)
		os.Exit(1)
	}
	prompt := os.Getenv("INITIAL_PROMPT")
	if b, err := os.ReadFile(os.Getenv("INITIAL_PROMPT_FILE")); err == nil {
		prompt = string(b)
	}
	if prompt == "attack" {
		b, _ := json.Marshal(attack(ctx, ws, port)) // plain types: cannot fail
		if err := os.WriteFile(filepath.Join(ws, "hostile.json"), b, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "hostile:", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "healthy", "session_id": id}) // the client may be gone
	})
	srv := &http.Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }() // ends with the process
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
}

func attack(ctx context.Context, ws string, port int) Result {
	r := Result{OtherWorkspaces: map[string]string{}}
	ppid := strconv.Itoa(os.Getppid())
	if b, err := os.ReadFile("/proc/" + ppid + "/environ"); err != nil {
		r.ParentEnviron = "denied: " + err.Error()
	} else {
		r.ParentEnviron = "read: " + string(b)
	}
	if f, err := os.Open("/proc/" + ppid + "/mem"); err != nil {
		r.ParentMem = "denied: " + err.Error()
	} else {
		r.ParentMem = "opened"
		_ = f.Close() // read-only
	}
	siblings, _ := filepath.Glob(filepath.Join(filepath.Dir(ws), "*"))
	for _, d := range siblings {
		if d == ws {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, ".initial-prompt")); err != nil {
			r.OtherWorkspaces[filepath.Base(d)] = "denied: " + err.Error()
		} else {
			r.OtherWorkspaces[filepath.Base(d)] = "read: " + string(b)
		}
	}
	client := &http.Client{Timeout: 200 * time.Millisecond}
	for p := port - 20; p <= port+20; p++ {
		if p == port || p <= 0 {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(p)+"/health", nil)
		if err != nil {
			continue
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close() // the status is enough
			if resp.StatusCode == http.StatusOK {
				r.OtherRunners = append(r.OtherRunners, p)
			}
		}
	}
	return r
}
