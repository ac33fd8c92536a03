package health

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// Status values in a [Report] and a [CheckResult].
const (
	StatusOK          = "ok"
	StatusFail        = "fail"
	StatusUnavailable = "unavailable"
)

// Report is the JSON body of /healthz and /readyz.
type Report struct {
	// Status is [StatusOK] or, for /readyz with a failing check,
	// [StatusUnavailable].
	Status string `json:"status"`
	// Failing names the failing checks, sorted.
	Failing []string `json:"failing,omitempty"`
	// Checks holds each check's result by name.
	Checks map[string]CheckResult `json:"checks,omitempty"`
}

// CheckResult is one readiness check's outcome.
type CheckResult struct {
	// Status is [StatusOK] or [StatusFail].
	Status string `json:"status"`
	// Error is the check's error text when it failed.
	Error string `json:"error,omitempty"`
	// DurationMS is how long the check ran, in milliseconds.
	DurationMS int64 `json:"duration_ms"`
}

// Readiness states for Server.ready; 0 means no probe yet.
const (
	stateReady int32 = iota + 1
	stateNotReady
)

// Readiness runs every check concurrently, each bounded by
// Options.CheckTimeout, and returns the report /readyz serves. A check that
// ignores its ctx is reported as timed out on time; its goroutine ends when
// the check finally returns. Readiness changes are logged once per change.
func (s *Server) Readiness(ctx context.Context) Report {
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for name, fn := range s.checks {
		checks[name] = fn
	}
	s.mu.Unlock()

	type outcome struct {
		name string
		res  CheckResult
	}
	// Buffered for every check so each sender finishes without a reader.
	results := make(chan outcome, len(checks))
	for name, fn := range checks {
		// Owned by Readiness: sends exactly once to the buffered channel and
		// exits; Readiness waits for every result below.
		go func() {
			results <- outcome{name: name, res: s.runCheck(ctx, fn)}
		}()
	}
	rep := Report{Status: StatusOK, Checks: make(map[string]CheckResult, len(checks))}
	for range checks {
		o := <-results
		rep.Checks[o.name] = o.res
		if o.res.Status != StatusOK {
			rep.Failing = append(rep.Failing, o.name)
		}
	}
	if len(rep.Failing) > 0 {
		slices.Sort(rep.Failing)
		rep.Status = StatusUnavailable
	}
	s.logChange(rep)
	return rep
}

// runCheck runs one check under the check timeout. The check itself runs in
// its own goroutine so a check that ignores ctx cannot hold the probe past
// the timeout.
func (s *Server) runCheck(ctx context.Context, fn Check) CheckResult {
	ctx, cancel := context.WithTimeout(ctx, s.checkTimeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1) // one send, so a late check never blocks
	// Owned by runCheck: ends when fn returns; if fn ignores ctx it outlives
	// runCheck only until fn returns, and its send never blocks.
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("check timed out after %s: %w", s.checkTimeout, ctx.Err())
	}
	res := CheckResult{Status: StatusOK, DurationMS: time.Since(start).Milliseconds()}
	if err != nil {
		res.Status = StatusFail
		res.Error = err.Error()
	}
	return res
}

// logChange logs readiness transitions, not every probe.
func (s *Server) logChange(rep Report) {
	next := stateReady
	if rep.Status != StatusOK {
		next = stateNotReady
	}
	if prev := s.ready.Swap(next); prev == next {
		return
	}
	if next == stateReady {
		s.log.Info("service ready")
		return
	}
	s.log.Warn("service not ready", slog.Any(logkey.Reason, rep.Failing))
}
