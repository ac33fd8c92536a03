package reconcile

import (
	"log/slog"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// checkPass collects the failures of one runner check pass: how many
// sessions could not be checked, of how many, and the first one's id and
// error as a sample.
type checkPass struct {
	checked, failed int
	sample          string
	err             error
}

// add counts one runner's check; err nil is a check that succeeded.
func (p *checkPass) add(id string, err error) {
	p.checked++
	if err == nil {
		return
	}
	if p.failed == 0 {
		p.sample, p.err = id, err
	}
	p.failed++
}

// checkFailures logs the runner check's failures on a change of state:
// a warning for the first pass with failures, debug lines while passes
// keep failing (an API outage fails every runner's check at every pass),
// and one line when a pass succeeds again, with how many failures were
// not logged as warnings. Owned by the reconciler's loop goroutine, the
// only caller of checkRunners.
type checkFailures struct {
	passes     int // passes with failures in a row
	suppressed int // failures of those passes after the first
}

// report logs what pass means after the passes before it.
func (f *checkFailures) report(log *slog.Logger, pass checkPass) {
	switch {
	case pass.failed > 0 && f.passes == 0:
		log.Warn("runner check: sessions could not be read; repeats are logged at debug level until a check passes",
			slog.Int(logkey.Count, pass.failed), slog.Int("runners", pass.checked),
			slog.String(logkey.SessionID, pass.sample), slog.String(logkey.Err, pass.err.Error()))
		f.passes = 1
	case pass.failed > 0:
		log.Debug("runner check: sessions could not be read",
			slog.Int(logkey.Count, pass.failed), slog.Int("runners", pass.checked),
			slog.String(logkey.SessionID, pass.sample), slog.String(logkey.Err, pass.err.Error()))
		f.passes++
		f.suppressed += pass.failed
	case f.passes > 0:
		log.Info("runner check: sessions read again",
			slog.Int("failed_passes", f.passes), slog.Int("suppressed", f.suppressed))
		*f = checkFailures{}
	}
}
