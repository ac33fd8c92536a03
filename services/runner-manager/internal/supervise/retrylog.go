package supervise

import (
	"log/slog"

	"github.com/ambient-code/control-plane/libs/logkey"
	"github.com/ambient-code/control-plane/libs/session"
)

// finalPass collects the final-phase retries of one Resend pass: how many
// runners wait for their final phase, how many of their writes failed or
// were written, and the first failure as a sample.
type finalPass struct {
	waiting, failed, written int
	sample                   string
	phase                    session.Phase
	err                      error
}

// add counts one runner's retry; err nil is a write that succeeded.
func (p *finalPass) add(id string, phase session.Phase, err error) {
	p.waiting++
	if err == nil {
		p.written++
		return
	}
	if p.failed == 0 {
		p.sample, p.phase, p.err = id, phase, err
	}
	p.failed++
}

// finalRetries logs the final-phase retries on a change of state: a
// warning for the first pass with failures, debug lines while passes keep
// failing (an API outage fails every waiting runner's retry at every
// sweep), and one line when a pass has no failure again, with how many
// failures were not logged as warnings. Before, each waiting runner
// logged a warning per sweep for as long as the outage lasted. Used by
// one Resend pass at a time (Supervisor.resending).
type finalRetries struct {
	passes     int // passes with failures in a row
	suppressed int // failures of those passes after the first
}

// report logs what pass means after the passes before it.
func (f *finalRetries) report(log *slog.Logger, pass finalPass) {
	switch {
	case pass.failed > 0 && f.passes == 0:
		log.Warn("retry final phase write: failed; repeats are logged at debug level until a pass writes without failure",
			slog.Int(logkey.Count, pass.failed), slog.Int("waiting", pass.waiting),
			slog.String(logkey.SessionID, pass.sample), slog.String(logkey.Phase, string(pass.phase)),
			slog.String(logkey.Err, pass.err.Error()))
		f.passes = 1
	case pass.failed > 0:
		log.Debug("retry final phase write: failed",
			slog.Int(logkey.Count, pass.failed), slog.Int("waiting", pass.waiting),
			slog.String(logkey.SessionID, pass.sample), slog.String(logkey.Phase, string(pass.phase)),
			slog.String(logkey.Err, pass.err.Error()))
		f.passes++
		f.suppressed += pass.failed
	case f.passes > 0:
		log.Info("retry final phase write: no failure any more",
			slog.Int("written", pass.written), slog.Int("failed_passes", f.passes), slog.Int("suppressed", f.suppressed))
		f.passes, f.suppressed = 0, 0
	}
}
