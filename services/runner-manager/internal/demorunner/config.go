package demorunner

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Environment variables read by the demo runner.
const (
	EnvPort      = "AGUI_PORT"
	EnvSessionID = "SESSION_ID"
	EnvWorkspace = "WORKSPACE_PATH"
	EnvWordDelay = "DEMO_WORD_DELAY" // delay between words, Go duration
	EnvRepeat    = "DEMO_REPEAT"     // echo the message this many times (long runs)
	EnvHost      = "DEMO_HOST"       // listen host, default 127.0.0.1
	// The session's prompt: the file runner-manager writes, else the
	// variable (small prompts only, or runners started by hand).
	EnvPromptFile = "INITIAL_PROMPT_FILE"
	EnvPrompt     = "INITIAL_PROMPT"
)

// Config of the demo runner.
type Config struct {
	Host      string
	Port      int
	SessionID string
	Workspace string
	WordDelay time.Duration
	Repeat    int
	// Prompt is the session's initial prompt (the demo only reports its
	// size and digest in /debug/stats).
	Prompt string
}

// FromEnv reads the config through getenv and returns every problem at once.
func FromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{Host: "127.0.0.1", Port: 8000, WordDelay: 50 * time.Millisecond, Repeat: 1}
	var errs []error
	if v := getenv(EnvHost); v != "" {
		cfg.Host = v
	}
	if v := getenv(EnvPort); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: want a port 0-65535, got %q", EnvPort, v))
		}
		cfg.Port = p
	}
	cfg.SessionID = getenv(EnvSessionID)
	cfg.Workspace = getenv(EnvWorkspace)
	if v := getenv(EnvWordDelay); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s: want a duration >= 0 like 50ms, got %q", EnvWordDelay, v))
		}
		cfg.WordDelay = d
	}
	if v := getenv(EnvRepeat); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("%s: want an integer >= 1, got %q", EnvRepeat, v))
		}
		cfg.Repeat = n
	}
	if path := getenv(EnvPromptFile); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvPromptFile, err))
		}
		cfg.Prompt = string(b)
	} else {
		cfg.Prompt = getenv(EnvPrompt)
	}
	return cfg, errors.Join(errs...)
}
