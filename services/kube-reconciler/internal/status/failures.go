package status

import (
	"context"
	"log/slog"
	"sync"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// writeFailures logs the write-back's retried failures once per outage
// rather than once per CR per retry: when the API is down every queued CR
// fails at every retry, and a 6-minute API outage in the chaos suite made
// 434 warnings. The first failure while no CR is failing is a warning;
// further failures are debug lines; when the last failing CR is written
// (or gone), one line says so, with how many failures went to debug.
// Safe for concurrent use (one per Controller, shared by its workers).
type writeFailures struct {
	mu         sync.Mutex
	failing    map[string]bool // guarded by mu: CR keys whose last sync failed
	suppressed int             // guarded by mu: failures logged at debug level
}

func newWriteFailures() *writeFailures {
	return &writeFailures{failing: map[string]bool{}}
}

// failed logs a retried failure of CR key.
func (f *writeFailures) failed(ctx context.Context, log *slog.Logger, key string, err error) {
	f.mu.Lock()
	first := len(f.failing) == 0
	f.failing[key] = true
	if !first {
		f.suppressed++
	}
	f.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	log.LogAttrs(ctx, level, "status write-back failed, retrying", slog.String(logkey.Name, key), slog.Any(logkey.Err, err),
		slog.Bool("repeats_at_debug", first))
}

// done notes that CR key no longer fails (written, nothing to write, gone,
// or given up on), and logs the end of the failures when it was the last.
func (f *writeFailures) done(ctx context.Context, log *slog.Logger, key string) {
	f.mu.Lock()
	if !f.failing[key] {
		f.mu.Unlock()
		return
	}
	delete(f.failing, key)
	last, suppressed := len(f.failing) == 0, f.suppressed
	if last {
		f.suppressed = 0
	}
	f.mu.Unlock()
	if last {
		log.InfoContext(ctx, "status write-back: no failing CR left", slog.Int("suppressed", suppressed))
	}
}
