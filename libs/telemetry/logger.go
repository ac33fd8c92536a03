package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Levels accepted by [ParseLevel], in LOG_LEVEL spelling.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// ParseLevel maps debug|info|warn|error (any case; "" means info) to a slog
// level. An unknown value gives an error wrapping [ErrInvalidLevel] that
// names it.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case LevelDebug:
		return slog.LevelDebug, nil
	case LevelInfo, "":
		return slog.LevelInfo, nil
	case LevelWarn:
		return slog.LevelWarn, nil
	case LevelError:
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("log level %q: want one of %s|%s|%s|%s: %w",
			s, LevelDebug, LevelInfo, LevelWarn, LevelError, ErrInvalidLevel)
	}
}

// NewLogger returns a JSON slog logger writing to w at the given level (see
// [ParseLevel]). Only main should make one and pass it down; this function
// does not touch slog.Default. The logger is safe for concurrent use.
func NewLogger(level string, w io.Writer) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}
