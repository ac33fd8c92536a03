//go:build !linux

package runner

import (
	"context"
	"log/slog"
	"time"
)

// startTicks is unknown outside Linux (no /proc): a lost group is never
// signalled there.
func startTicks(int) (uint64, error) { return 0, nil }

// EndLostGroup signals nothing outside Linux: without a start time a
// recycled pid cannot be told from the lost runner.
func EndLostGroup(_ context.Context, log *slog.Logger, g LostGroup, _ time.Duration) error {
	log.Warn("lost runner's process group not signalled on this platform", slog.Int("pgid", g.PGID))
	return nil
}

// EndOrphans finds nothing outside Linux: there is no /proc to read a
// process's environment from.
func EndOrphans(context.Context, *slog.Logger, string, string, time.Duration) (int, error) {
	return 0, nil
}
