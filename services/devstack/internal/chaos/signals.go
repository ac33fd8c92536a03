package chaos

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// logSignals are log phrases that point at a finding of issue 14; the
// report counts them per process as hints next to the checks (the checks
// judge; a phrase may be reworded without failing anything).
var logSignals = []string{
	"maximum payload exceeded", // informer: an event over NATS max_payload (finding 3)
	"claim taken over",         // runner-manager: a peer's sessions taken (finding 1)
	"event dead-lettered",      // a consumer gave up on an event (finding 2)
	// A delivery overtook an older one of its object that was lost in
	// transit (a consumer re-created, a reconnect); the lane waited for
	// it (libs/group order.go). Without that wait each would have run out
	// of order.
	"event waits for an older event of its object",
}

// signalCount is how often one phrase appeared in one process' log.
type signalCount struct {
	Phrase, Process string
	Lines           int
}

// scanSignals counts logSignals in every log of the run.
func scanSignals(logDir string) []signalCount {
	files, err := filepath.Glob(filepath.Join(logDir, "*.log"))
	if err != nil {
		return nil
	}
	var out []signalCount
	for _, f := range files {
		counts := countPhrases(f)
		proc := strings.TrimSuffix(filepath.Base(f), ".log")
		for _, p := range logSignals {
			if counts[p] > 0 {
				out = append(out, signalCount{Phrase: p, Process: proc, Lines: counts[p]})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Phrase != out[j].Phrase {
			return out[i].Phrase < out[j].Phrase
		}
		return out[i].Process < out[j].Process
	})
	return out
}

func countPhrases(path string) map[string]int {
	f, err := os.Open(path) //nolint:gosec // a log file of this run
	if err != nil {
		return nil
	}
	defer f.Close() //nolint:errcheck // read only
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20) // long JSON lines carry errors with objects
	for sc.Scan() {
		line := sc.Text()
		for _, p := range logSignals {
			if strings.Contains(line, p) {
				counts[p]++
			}
		}
	}
	return counts
}
