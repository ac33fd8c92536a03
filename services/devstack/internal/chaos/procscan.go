package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// Environment of a runner process (runner-manager's internal/runner/env.go
// and docs/configuration.md "Runner environment").
const (
	envSessionID = "SESSION_ID"
	envWorkspace = "WORKSPACE_PATH"
)

// recheckSamples is how many samples a process that is not a runner is read
// again: a runner forked by runner-manager shows runner-manager's command
// line until it execs the runner program.
const recheckSamples = 10

// runnerProc is one live runner process.
type runnerProc struct {
	PID     int
	Session string
	// Replica is the runner-manager whose workspace root the runner runs in
	// (each replica of the run has its own root).
	Replica string
}

// procTable finds this run's runner processes in a procfs. A process is a
// runner of this run when its argv[0] is the runner program and its
// WORKSPACE_PATH lies under the run's workspace root: other runs and other
// engineers' runners on the same host do not count. It is not safe for
// concurrent use.
type procTable struct {
	fs       procfs.FS // of "/proc" outside tests
	exe      string
	workRoot string
	sample   int
	known    map[int]procEntry
}

type procEntry struct {
	runner    bool
	session   string
	replica   string
	firstSeen int
}

// newProcTable reads the procfs mounted at root ("/proc" outside tests).
func newProcTable(root, exe, workRoot string) (*procTable, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("procfs at %s: %w", root, err)
	}
	return &procTable{fs: fs, exe: exe, workRoot: filepath.Clean(workRoot) + string(filepath.Separator), known: map[int]procEntry{}}, nil
}

// scan returns the live runners of this run (neither a zombie nor
// stopped), sorted by session and pid.
func (t *procTable) scan() ([]runnerProc, error) {
	live, _, err := t.scanStates()
	return live, err
}

// scanStates returns the runners of this run that are live and those that
// are stopped (state T or t: a SIGSTOP, a frozen node), each sorted by
// session and pid. A stopped runner serves nothing, so it is no live
// runner; it still exists, and resumes on SIGCONT.
func (t *procTable) scanStates() (live, stopped []runnerProc, err error) {
	t.sample++
	all, err := t.fs.AllProcs()
	if err != nil {
		return nil, nil, fmt.Errorf("list processes: %w", err)
	}
	present := make(map[int]bool, len(all))
	for _, p := range all {
		pid := p.PID
		present[pid] = true
		pe, ok := t.known[pid]
		if !ok || (!pe.runner && t.sample-pe.firstSeen < recheckSamples) {
			first := t.sample
			if ok {
				first = pe.firstSeen
			}
			pe = t.classify(p)
			pe.firstSeen = first
			t.known[pid] = pe
		}
		if !pe.runner {
			continue
		}
		r := runnerProc{PID: pid, Session: pe.session, Replica: pe.replica}
		switch stateOf(p) {
		case procLive:
			live = append(live, r)
		case procStopped:
			stopped = append(stopped, r)
		}
	}
	for pid := range t.known {
		if !present[pid] {
			delete(t.known, pid)
		}
	}
	sortRunners(live)
	sortRunners(stopped)
	return live, stopped, nil
}

func sortRunners(rs []runnerProc) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Session != rs[j].Session {
			return rs[i].Session < rs[j].Session
		}
		return rs[i].PID < rs[j].PID
	})
}

func (t *procTable) classify(p procfs.Proc) procEntry {
	argv, err := p.CmdLine()
	if err != nil || len(argv) == 0 || argv[0] != t.exe {
		return procEntry{}
	}
	environ, err := p.Environ()
	if err != nil {
		return procEntry{}
	}
	var session, workspace string
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case envSessionID:
			session = v
		case envWorkspace:
			workspace = v
		}
	}
	rel, ok := strings.CutPrefix(filepath.Clean(workspace), t.workRoot)
	if session == "" || !ok {
		return procEntry{}
	}
	replica, _, _ := strings.Cut(rel, string(filepath.Separator))
	return procEntry{runner: true, session: session, replica: replica}
}

// procState is what the audit makes of a process's state.
type procState int

const (
	procGone procState = iota
	procLive
	procStopped
)

// stateOf reads the state of /proc/<pid>/stat: gone, a zombie (Z) or dead
// (X) process is gone; a stopped one (T: SIGSTOP, t: stopped by a tracer)
// is stopped: it answers nothing, so it is no live runner (the audit's
// decision for a frozen node: its runners run again only after SIGCONT).
func stateOf(p procfs.Proc) procState {
	st, err := p.Stat()
	switch {
	case err != nil || st.State == "Z" || st.State == "X":
		return procGone
	case st.State == "T" || st.State == "t":
		return procStopped
	default:
		return procLive
	}
}

// twiceIn returns the sessions with more than one live runner in sample.
func twiceIn(sample []runnerProc) map[string][]runnerProc {
	by := map[string][]runnerProc{}
	for _, r := range sample {
		by[r.Session] = append(by[r.Session], r)
	}
	for s, rs := range by {
		if len(rs) < 2 {
			delete(by, s)
		}
	}
	return by
}

// twiceRecord is what the sampler saw of one session run twice: one
// episode (consecutive samples with the same runners), or in the audit's
// result all of a session's episodes that count as twice.
type twiceRecord struct {
	Session     string
	First, Last time.Time
	Samples     int
	Runners     []runnerProc // at the first sample
}

// sampler scans the process table every interval for the whole run and
// keeps every episode of a session with two live runners. It is safe for
// concurrent use.
type sampler struct {
	table    *procTable
	interval time.Duration

	mu       sync.Mutex
	latest   []runnerProc  // guarded by mu
	latestAt time.Time     // guarded by mu
	twice    []twiceRecord // guarded by mu; the episodes, in order of their start
	// open maps a session twice in the last sample to its episode in
	// twice; guarded by mu.
	open    map[string]int
	samples int           // guarded by mu
	slowest time.Duration // guarded by mu
	err     error         // guarded by mu; the first scan error
}

func newSampler(table *procTable, interval time.Duration) *sampler {
	return &sampler{table: table, interval: interval, open: map[string]int{}}
}

// Run samples until ctx is done.
func (s *sampler) Run(ctx context.Context) {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		s.sampleOnce()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *sampler) sampleOnce() {
	begun := time.Now()
	rs, err := s.table.scan()
	took := time.Since(begun)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.samples++
	s.slowest = max(s.slowest, took)
	s.latest, s.latestAt = rs, begun
	open := map[string]int{}
	twice := twiceIn(rs)
	for _, sid := range sortedKeys(twice) {
		runners := twice[sid]
		i, ok := s.open[sid]
		// Another set of runners is another episode: the audit judges
		// each (a thawed runner beside its successor is not a second
		// successor).
		if !ok || !slices.Equal(s.twice[i].Runners, runners) {
			s.twice = append(s.twice, twiceRecord{Session: sid, First: begun, Runners: runners})
			i = len(s.twice) - 1
		}
		s.twice[i].Last = begun
		s.twice[i].Samples++
		open[sid] = i
	}
	s.open = open
}

// Latest returns the last sample: session id -> live runners.
func (s *sampler) Latest() (map[string][]runnerProc, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]runnerProc{}
	for _, r := range s.latest {
		out[r.Session] = append(out[r.Session], r)
	}
	return out, s.latestAt
}

// samplerStats is the sampler's record of the whole run.
type samplerStats struct {
	Samples int
	Slowest time.Duration
	// Twice are the episodes of sessions with two live runners, in order
	// of their start (a session may have several).
	Twice []twiceRecord
	Err   error
}

func (s *sampler) Stats() samplerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return samplerStats{Samples: s.samples, Slowest: s.slowest, Err: s.err, Twice: slices.Clone(s.twice)}
}
