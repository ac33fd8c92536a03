// Command demo-runner is a small AG-UI runner: it echoes the last user message
// word by word as an SSE stream. It is the default runner of the dev stack and
// of runner-manager's tests. Configuration: AGUI_PORT, SESSION_ID,
// WORKSPACE_PATH, DEMO_WORD_DELAY, DEMO_REPEAT, DEMO_HOST, INITIAL_PROMPT_FILE
// (else INITIAL_PROMPT).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-code/control-plane/services/runner-manager/internal/demorunner"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := demorunner.FromEnv(os.Getenv)
	if err == nil {
		err = demorunner.New(cfg, log).Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-runner:", err)
		stop()
		os.Exit(1)
	}
}
