package reconcile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ambient-code/control-plane/libs/registry"
	"github.com/ambient-code/control-plane/libs/session"
	"github.com/ambient-code/control-plane/libs/testenv"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// jsonLog takes a replica's log as JSON lines (replicaOpts.logs), for
// tests of what is logged; each line also goes to the test writer, shown
// if the test fails.
type jsonLog struct {
	mu    sync.Mutex
	lines [][]byte // one record each; guarded by mu
	tw    *testWriter
}

// handler returns the replica's handler: JSON, every level.
func (l *jsonLog) handler(t *testing.T) slog.Handler {
	l.tw = newTestWriter(t)
	return slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})
}

// Write takes one record: slog's JSON handler writes each in one call.
func (l *jsonLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, bytes.Clone(p))
	l.mu.Unlock()
	return l.tw.Write(p)
}

// entry is one decoded record: its level, message, and the keys it holds
// more than once (the handler's attributes and the logger's With
// attributes together: slog writes both, duplicates included).
type entry struct {
	level, msg string
	dups       []string
	line       string
}

// since decodes the records logged from the n-th on.
func (l *jsonLog) since(t *testing.T, n int) []entry {
	t.Helper()
	l.mu.Lock()
	lines := l.lines[n:len(l.lines):len(l.lines)]
	l.mu.Unlock()
	out := make([]entry, 0, len(lines))
	for _, line := range lines {
		e, err := decodeEntry(line)
		if err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// len is how many records were logged so far.
func (l *jsonLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// decodeEntry reads one JSON record key by key (a map would keep one of
// two equal keys silently).
func decodeEntry(line []byte) (entry, error) {
	e := entry{line: string(bytes.TrimSpace(line))}
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return e, fmt.Errorf("not an object: %v %v", tok, err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return e, fmt.Errorf("key: %w", err)
		}
		key, _ := tok.(string) // object keys are strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return e, fmt.Errorf("value of %s: %w", key, err)
		}
		if seen[key] {
			e.dups = append(e.dups, key)
		}
		seen[key] = true
		switch key {
		case slog.LevelKey:
			_ = json.Unmarshal(v, &e.level) // a string: slog writes it
		case slog.MessageKey:
			_ = json.Unmarshal(v, &e.msg)
		}
	}
	if _, err := dec.Token(); err != nil && !errors.Is(err, io.EOF) {
		return e, fmt.Errorf("end: %w", err)
	}
	return e, nil
}

// noDuplicateKeys fails the test if a record holds a key twice.
func noDuplicateKeys(t *testing.T, entries []entry) {
	t.Helper()
	var bad []entry
	for _, e := range entries {
		if len(e.dups) > 0 {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d records hold a key twice, the first %v: %s", len(bad), len(entries), bad[0].dups, bad[0].line)
	}
}

// While the API is down, the runner check of K runners logs its failures
// once for the outage and once at the recovery, not a warning per runner
// per pass.
func TestRunnerCheckOutageLogVolume(t *testing.T) {
	t.Parallel()
	const runners, passes = 6, 5
	e := newEnv(t)
	logs := &jsonLog{}
	// No check interval: the test runs the passes itself (checkRunners
	// is the loop's alone, and the loop does not run it here).
	rp := e.replica(replicaOpts{logs: logs, max: runners})
	var first string
	for i := range runners {
		s := e.create(fmt.Sprintf("s%d", i))
		e.startRunning(rp, s)
		first = s.GetMetadata().GetId()
	}
	// A runner's "runner running" is logged just after startRunning sees
	// its record: wait for all of them, or the last one can land among
	// the outage's records (failed so in CI).
	testenv.Eventually(t, 10*time.Second, func() error {
		n := 0
		for _, en := range logs.since(t, 0) {
			if en.msg == "runner running" {
				n++
			}
		}
		if n < runners {
			return fmt.Errorf("%d of %d runners logged running", n, runners)
		}
		return nil
	})
	mark := logs.len()
	e.api.StartOutage(time.Minute)
	for range passes {
		rp.rec.checkRunners(t.Context())
	}
	outage := logs.since(t, mark)
	e.api.EndOutage()
	// The client (the replica's too) reconnects on its own backoff: a
	// pass after it reads every session again.
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := e.client.GetSession(t.Context(), first)
		return err
	})
	rp.rec.checkRunners(t.Context())
	all := logs.since(t, mark)
	var loud []string // info and above
	for _, en := range all {
		if en.level != slog.LevelDebug.String() {
			loud = append(loud, en.level+" "+en.msg)
		}
	}
	t.Logf("%d passes of %d runners in the outage: %d records (%d while down); info and above: %q", passes, runners, len(all), len(outage), loud)
	// O(1) for the outage: its first failing pass and its recovery.
	if len(loud) > 2 {
		t.Errorf("%d records at info or above for an outage of %d check passes of %d runners, want at most 2 (the outage and the recovery)", len(loud), passes, runners)
	}
	// Every pass still says, at debug level, that it failed: once.
	var warned bool
	for _, en := range outage {
		warned = warned || en.level == slog.LevelWarn.String()
	}
	if !warned {
		t.Errorf("the outage's first failing pass logged no warning")
	}
	noDuplicateKeys(t, all)
}

// A peer cut off from NATS while its runners answer: the sweep leaves its
// K sessions alone and says so once, not once per session per sweep, and
// names the peer under its own key ("owner"), not a second "member".
func TestAnsweringPeerLogVolume(t *testing.T) {
	t.Parallel()
	const sessions, sweeps = 4, 5
	e := newEnv(t)
	link := testenv.NewLink(t, strings.TrimPrefix(e.nats.ClientURL(), "nats://"))
	logs := &jsonLog{}
	observer := e.replica(replicaOpts{member: "rm-0", logs: logs})
	nc := testenv.ConnURL(t, "nats://"+link.Addr())
	peer := e.replica(replicaOpts{member: "rm-1", nc: nc})
	cut := false
	t.Cleanup(func() { // before rm-1 stops: it releases its claims
		if cut {
			link.Restore()
		}
	})
	for i := range sessions {
		e.startRunning(peer, e.create(fmt.Sprintf("s%d", i)))
	}
	link.Cut()
	cut = true
	answering := func(en entry) bool { return strings.HasPrefix(en.msg, "owner has no heartbeat but its runner answers") }
	// The peer's heartbeat expires (2 s) and a sweep finds its runners
	// answering.
	testenv.Eventually(t, 15*time.Second, func() error {
		for _, en := range logs.since(t, 0) {
			if answering(en) {
				return nil
			}
		}
		return errors.New("no sweep found the peer's runners answering yet")
	})
	mark := logs.len()
	for range sweeps {
		observer.rec.sweep(t.Context())
	}
	var lines int
	for _, en := range logs.since(t, mark) {
		if answering(en) {
			lines++
		}
	}
	t.Logf("%d sweeps over %d answering sessions: %d lines", sweeps, sessions, lines)
	// The loop sweeps too, concurrently: a session new to a scan running
	// beside the one that logged it may be logged once more.
	if lines >= sweeps {
		t.Errorf("%d sweeps logged %d lines for %d answering sessions, want fewer than one per sweep", sweeps, lines, sessions)
	}
	noDuplicateKeys(t, logs.since(t, 0))
	// Reconnected before it stops: its shutdown leaves the member set.
	link.Restore()
	cut = false
	testenv.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return errors.New("rm-1 not reconnected")
		}
		return nil
	})
}

// While the API is down, the final phases of K runners that ended wait in
// their records and the sweep retries them (Supervisor.Resend): the
// retries log their failures once for the outage and once when a pass
// writes without failure, not a warning per runner per sweep.
func TestFinalPhaseRetryOutageLogVolume(t *testing.T) {
	t.Parallel()
	const runners, passes = 3, 3
	e := newEnv(t)
	logs := &jsonLog{}
	rp := e.replica(replicaOpts{logs: logs, max: runners})
	ids := make([]string, 0, runners)
	pids := make([]int, 0, runners)
	for i := range runners {
		s := e.create(fmt.Sprintf("s%d", i))
		rec := e.startRunning(rp, s)
		ids = append(ids, s.GetMetadata().GetId())
		pids = append(pids, rec.PID)
	}
	e.api.StartOutage(time.Minute)
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	// Each runner's final phase (Failed) could not be written and waits in
	// its record (state exited) for the sweep's retries.
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, id := range ids {
			rec, err := registry.Get(t.Context(), e.runners, id)
			if err != nil {
				return err
			}
			if rec.State != registry.StateExited || rec.Final == nil {
				return fmt.Errorf("record %+v: final phase not recorded yet", rec)
			}
		}
		return nil
	})
	retry := func(en entry) bool { return strings.HasPrefix(en.msg, "retry final phase write") }
	mark := logs.len()
	// The loop's sweep retries too, concurrently; these passes make sure
	// there are several.
	for range passes {
		rp.rec.sup.Resend(t.Context())
	}
	outage := logs.since(t, mark)
	e.api.EndOutage()
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := e.client.GetSession(t.Context(), ids[0])
		return err
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		rp.rec.sup.Resend(t.Context())
		for _, id := range ids {
			if p := session.PhaseOf(e.get(id)); p != session.PhaseFailed {
				return fmt.Errorf("session %s %q, want Failed", id, p)
			}
		}
		return nil
	})
	// A pass with nothing left to retry: the recovery is logged by now,
	// whichever pass (this one, or the loop's that wrote the last phase)
	// reports first.
	rp.rec.sup.Resend(t.Context())
	all := logs.since(t, mark)
	var loud []string // retries' records at info and above
	var warned, recovered bool
	for _, en := range all {
		if !retry(en) || en.level == slog.LevelDebug.String() {
			continue
		}
		loud = append(loud, en.level+" "+en.msg)
		recovered = recovered || en.level == slog.LevelInfo.String()
	}
	for _, en := range outage {
		warned = warned || retry(en) && en.level == slog.LevelWarn.String()
	}
	t.Logf("%d passes over %d waiting final phases in the outage: %d records (%d while down); retries at info and above: %q", passes, runners, len(all), len(outage), loud)
	// O(1) for the outage: its first failing pass and its recovery.
	if len(loud) > 2 {
		t.Errorf("%d retry records at info or above for an outage of %d passes over %d waiting final phases, want at most 2 (the outage and the recovery)", len(loud), passes, runners)
	}
	if !warned {
		t.Errorf("the outage's first failing pass logged no warning")
	}
	if !recovered {
		t.Errorf("no record of the retries writing again after the outage")
	}
	noDuplicateKeys(t, all)
}

// TestLiveWriteRetryLogVolume: Creating and Running writes that fail (the
// API refusing them for a while) are retried by every sweep; the retries'
// failures are logged once for the outage and once at its end, not once
// per runner per sweep. The first attempt of each write still warns.
func TestLiveWriteRetryLogVolume(t *testing.T) {
	t.Parallel()
	const runners, failures = 3, 40
	e := newEnv(t)
	logs := &jsonLog{}
	rp := e.replica(replicaOpts{logs: logs, max: runners})
	e.api.FailNext(ambientv1.SessionService_UpdateSessionStatus_FullMethodName, failures, codes.Unavailable)
	ids := make([]string, 0, runners)
	for i := range runners {
		s := e.create(fmt.Sprintf("live%d", i))
		ids = append(ids, s.GetMetadata().GetId())
		e.handle(rp, added, s)
	}
	for _, id := range ids {
		e.waitPhase(id, session.PhaseRunning, 60*time.Second)
	}
	// The recovery is logged by the pass that wrote the last retry, or by
	// the next one.
	rp.rec.sup.Resend(t.Context())
	var firstTries, retries int
	var loud []string
	for _, en := range logs.since(t, 0) {
		switch {
		case en.msg == "write phase; the sweep retries":
			firstTries++
		case strings.HasPrefix(en.msg, "retry phase write") && en.level != slog.LevelDebug.String():
			retries++
			loud = append(loud, en.level+" "+en.msg)
		}
	}
	t.Logf("%d failed calls: %d first-try warnings, retries at info and above: %q", failures, firstTries, loud)
	if firstTries > 2*runners {
		t.Errorf("%d warnings of failed phase writes for %d runners (a Creating and a Running each), want at most %d: the sweep's retries warn per runner per pass", firstTries, runners, 2*runners)
	}
	if retries > 2 {
		t.Errorf("%d retry records at info or above, want at most 2 (the outage and the recovery)", retries)
	}
}
