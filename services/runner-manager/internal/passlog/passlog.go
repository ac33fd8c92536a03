// Package passlog logs the failures of a periodic pass over many items
// (the runner check over local runners, the sweep's final-phase retries)
// once per outage instead of once per item per pass: an API outage fails
// every item at every pass, and 12 runners made about 100 warnings a
// minute. A pass's failures are counted (Pass); Log turns the passes into
// a warning on the first failing pass, debug lines while passes keep
// failing, and one line when a pass has no failure again.
package passlog

import (
	"context"
	"log/slog"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// Pass collects the outcomes of one pass: how many items it tried, how
// many failed, and the first failure as a sample.
type Pass struct {
	tried, failed int
	sample        []slog.Attr
	err           error
}

// Add counts one item's outcome (err nil: it succeeded). sample
// describes the item (its session id, the phase it wrote); only the first
// failure's is kept.
func (p *Pass) Add(err error, sample ...slog.Attr) {
	p.tried++
	if err == nil {
		return
	}
	if p.failed == 0 {
		p.sample, p.err = sample, err
	}
	p.failed++
}

// Log reports passes on a change of state. It is used by one pass at a
// time (its caller serializes the passes: each report follows the one
// before it).
type Log struct {
	// What names the pass's failure, e.g. "runner check: sessions could
	// not be read".
	What string
	// Recovered is the message of the first pass without a failure.
	Recovered string
	// TriedKey is the key of how many items a pass tried ("runners").
	TriedKey string
	// SucceededKey, when set, is the key of how many items the recovered
	// pass did ("written").
	SucceededKey string

	passes     int // passes with failures in a row
	suppressed int // failures of those passes after the first
}

// Report logs what pass means after the passes before it.
func (l *Log) Report(ctx context.Context, log *slog.Logger, pass Pass) {
	var (
		level slog.Level
		msg   string
		attrs []slog.Attr
	)
	switch {
	case pass.failed > 0:
		attrs = append([]slog.Attr{slog.Int(logkey.Count, pass.failed), slog.Int(l.TriedKey, pass.tried)}, pass.sample...)
		attrs = append(attrs, slog.String(logkey.Err, pass.err.Error()))
		level, msg = slog.LevelWarn, l.What+"; repeats are logged at debug level until a pass has no failure"
		if l.passes > 0 {
			level, msg = slog.LevelDebug, l.What
			l.suppressed += pass.failed
		}
		l.passes++
	case l.passes > 0:
		attrs = []slog.Attr{slog.Int("failed_passes", l.passes), slog.Int("suppressed", l.suppressed)}
		if l.SucceededKey != "" {
			attrs = append([]slog.Attr{slog.Int(l.SucceededKey, pass.tried)}, attrs...)
		}
		level, msg = slog.LevelInfo, l.Recovered
		l.passes, l.suppressed = 0, 0
	default:
		return
	}
	log.LogAttrs(ctx, level, msg, attrs...) //nolint:sloglint // msg is built from the caller's constants (What, Recovered), one message per kind of pass
}
