package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The informer's condition on a session over the event payload limit
// (services/informer/internal/condition).
const (
	condEventsPublished = "EventsPublished"
	reasonTooLarge      = "ObjectTooLarge"
)

// Bounds of the over-limit fault (FaultOverLimit). The informer flags a
// session in the same step that publishes its reference event, and clears
// the flag with the first version that fits; a session made smaller
// converges as any change does. Measured (full run, seed 2412): flagged
// and cleared at the first look after the create or the shrink (the
// informer's log: the condition written under 100 ms after the create).
// 30 s is the run's convergence bound: it leaves room for a leader change
// in between (a lease TTL, 10 s, and a relist) on a loaded host.
const (
	overLimitFlagBound  = 30 * time.Second
	overLimitClearBound = 30 * time.Second
	// overLimitLimit bounds each wait, so a late figure is measured
	// rather than cut off at the bound.
	overLimitLimit = 2 * time.Minute
	overLimitPoll  = 500 * time.Millisecond
	// overLimitSlowLook: every that many polls the watcher also reads KV
	// ambient-runners and lists the AgenticSessions.
	overLimitSlowLook = 4
)

// overLimitRecord is what the over-limit fault saw. The fault record's
// Target is the local session, made smaller at Restored; Down0 is when
// both were created.
type overLimitRecord struct {
	// Kept is the kube session left over the limit to the end.
	Kept string
	// Flagged and KeptFlagged: how long after the create the local and
	// the kube session first carried the condition EventsPublished=False
	// ObjectTooLarge; -1: not while over the limit.
	Flagged, KeptFlagged time.Duration
	// Runners are the runners and KV ambient-runners records seen of the
	// local session while over the limit and of the kube session while
	// watched (there must be none: no consumer got their state, and
	// runner-manager's resync, which reads sessions from the API, leaves a
	// session flagged EventsPublished=False alone).
	Runners []string
	// CRs are the AgenticSessions seen of the local session while over the
	// limit and of the kube session while watched (there must be none).
	CRs []string
	// Leaders are the informer lease holders seen while over the limit,
	// with the pid of their process (see leader), in order, each change
	// once.
	Leaders []string
	// Cleared: how long after the shrink the condition was gone;
	// Converged: how long after it the session was Running with one runner
	// whose KV record names its replica; -1: not within overLimitLimit.
	Cleared, Converged time.Duration
	// Unread counts the looks at which the API, KV or Kubernetes could not
	// be read.
	Unread int
	// Watched: the watch ran to its end (the run was not cancelled).
	Watched bool
}

// overLimit creates the over-limit sessions (a local one, shrunk later, and
// a kube one, kept over the limit) and returns: the watch runs beside the
// next faults (watchOverLimit).
func (in *injector) overLimit(ctx context.Context, rec *faultRecord) error {
	local, err := in.drv.createOverLimit(ctx, true)
	if err != nil {
		return err
	}
	rec.Target, rec.Down0 = local, time.Now()
	kept, err := in.drv.createOverLimit(ctx, false)
	if err != nil {
		return err
	}
	rec.OverLimit = &overLimitRecord{Kept: kept}
	return nil
}

// watchOverLimit watches the over-limit sessions of record i (rec as
// injected) until their shrink at rec.At+rec.Down from t0, shrinks the
// local one, and watches until it is clear of the condition and
// converged, or overLimitLimit passed; then it writes what it saw into the
// record.
func (in *injector) watchOverLimit(ctx context.Context, i int, rec faultRecord, t0 time.Time) {
	res := *rec.OverLimit
	res.Flagged, res.KeptFlagged, res.Cleared, res.Converged = -1, -1, -1, -1
	tick := time.NewTicker(overLimitPoll)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			return true
		}
	}
	shrinkAt := t0.Add(rec.At + rec.Down)
	for n := 0; time.Now().Before(shrinkAt); n++ {
		in.lookOverLimit(ctx, &res, rec.Target, rec.Down0, time.Time{}, n)
		if !wait() {
			return
		}
	}
	shrunk := time.Now()
	err := in.drv.shrink(ctx, rec.Target)
	for n := 0; err == nil && time.Since(shrunk) < overLimitLimit && (res.Cleared < 0 || res.Converged < 0); n++ {
		in.lookOverLimit(ctx, &res, rec.Target, rec.Down0, shrunk, n)
		if !wait() {
			return
		}
	}
	res.Watched = true
	in.mu.Lock()
	defer in.mu.Unlock()
	r := &in.records[i]
	r.OverLimit, r.Restored = &res, shrunk
	r.Note = overLimitNote(res, r.Down)
	if err != nil {
		r.Err = err.Error()
	}
}

// lookOverLimit looks once at the over-limit sessions: local (created at
// created, shrunk at shrunk; zero: not yet) and res.Kept. Every
// overLimitSlowLook looks (n) it also reads KV ambient-runners and the
// AgenticSessions.
func (in *injector) lookOverLimit(ctx context.Context, res *overLimitRecord, local string, created, shrunk time.Time, n int) {
	over := shrunk.IsZero()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	runners, _ := in.smp.Latest()
	if s, err := in.drv.api.GetSession(rctx, local); err != nil {
		res.Unread++
	} else {
		flagged := tooLarge(s.GetConditions())
		switch {
		case over && flagged && res.Flagged < 0:
			res.Flagged = time.Since(created)
		case !over && !flagged && res.Cleared < 0:
			res.Cleared = time.Since(shrunk)
		}
		if !over && res.Converged < 0 && s.GetPhase() == phaseRunning && len(runners[local]) == 1 && in.ownedBy(rctx, local, runners[local][0].Replica) {
			res.Converged = time.Since(shrunk)
		}
	}
	if s, err := in.drv.api.GetSession(rctx, res.Kept); err != nil {
		res.Unread++
	} else if tooLarge(s.GetConditions()) && res.KeptFlagged < 0 {
		res.KeptFlagged = time.Since(created)
	}
	if over {
		for _, r := range runners[local] {
			res.Runners = appendNew(res.Runners, fmt.Sprintf("runner pid %d of the local session on %s", r.PID, r.Replica))
		}
	}
	for _, r := range runners[res.Kept] {
		res.Runners = appendNew(res.Runners, fmt.Sprintf("runner pid %d of the kube session on %s", r.PID, r.Replica))
	}
	if over {
		if leader := in.leader(rctx); leader != "" && (len(res.Leaders) == 0 || res.Leaders[len(res.Leaders)-1] != leader) {
			res.Leaders = append(res.Leaders, leader)
		}
	}
	if n%overLimitSlowLook != 0 {
		return
	}
	if owners, err := in.nv.runnerRecords(rctx); err != nil {
		res.Unread++
	} else {
		if o, ok := owners[local]; ok && over {
			res.Runners = appendNew(res.Runners, "KV ambient-runners record of the local session, owner "+o.Owner)
		}
		if o, ok := owners[res.Kept]; ok {
			res.Runners = appendNew(res.Runners, "KV ambient-runners record of the kube session, owner "+o.Owner)
		}
	}
	crs, err := in.sys.kube.sessionCRs(rctx)
	if err != nil {
		res.Unread++
	}
	for _, cr := range crs {
		if cr.Session == res.Kept || (over && cr.Session == local) {
			res.CRs = appendNew(res.CRs, fmt.Sprintf("AgenticSession %s/%s of session %s", cr.Namespace, cr.Name, cr.Session))
		}
	}
}

// leader names the informer holding the lease and the pid of its process
// now ("" when unread, none holds it, or the holder is down): a leader
// killed and restarted may take the lease back under its name, yet the
// new process starts a new term, as a new leader does.
func (in *injector) leader(ctx context.Context) string {
	holder, err := in.nv.leaseHolder(ctx)
	m, ok := in.sys.byName[holder]
	if err != nil || !ok || m.proc.PID() == 0 {
		return ""
	}
	return fmt.Sprintf("%s pid %d", holder, m.proc.PID())
}

// ownedBy reports whether KV ambient-runners names replica as the owner of
// session id.
func (in *injector) ownedBy(ctx context.Context, id, replica string) bool {
	owners, err := in.nv.runnerRecords(ctx)
	return err == nil && owners[id].Owner == replica
}

// tooLarge reports whether conditions carry the informer's condition
// EventsPublished=False ObjectTooLarge.
func tooLarge(conditions string) bool {
	c, ok := conditionOf(conditions, condEventsPublished)
	return ok && c.Status == "False" && c.Reason == reasonTooLarge
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// overLimitNote renders the record for the report's fault schedule.
func overLimitNote(r overLimitRecord, down time.Duration) string {
	parts := []string{fmt.Sprintf("%d KiB of annotations; the local session flagged %s after the create, the kube one (%s, kept over the limit) %s after",
		overLimitBytes>>10, durationText(r.Flagged), r.Kept, durationText(r.KeptFlagged))}
	leaders := "none read"
	if len(r.Leaders) > 0 {
		leaders = strings.Join(r.Leaders, " -> ")
	}
	parts = append(parts, "informer lease holders while over the limit: "+leaders)
	if len(r.Runners) == 0 {
		parts = append(parts, "no runner or runner record of either while over the limit")
	}
	parts = append(parts, fmt.Sprintf("shrunk to %d KiB after %s: condition gone %s later, Running with one runner %s later", overLimitShrunk>>10, down.Round(time.Second), durationText(r.Cleared), durationText(r.Converged)))
	if len(r.CRs) > 0 {
		parts = append(parts, "seen: "+strings.Join(r.CRs, ", "))
	}
	if len(r.Runners) > 0 {
		parts = append(parts, "seen: "+strings.Join(r.Runners, ", "))
	}
	if r.Unread > 0 {
		parts = append(parts, fmt.Sprintf("%d looks could not read everything", r.Unread))
	}
	return strings.Join(parts, "; ")
}

// durationText renders a measured time; -1 is "never".
func durationText(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(100 * time.Millisecond).String()
}
