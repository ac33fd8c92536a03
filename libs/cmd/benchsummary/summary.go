package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// results holds benchmark measurements by benchmark name (without the
// "Benchmark" prefix and the -GOMAXPROCS suffix) and unit, as printed.
// A benchmark that printed several lines keeps the mean (samples.means).
type results map[string]map[string]float64

// samples collects every measurement read, by benchmark name and unit,
// across all inputs: a benchmark printed several times (-count, or in
// several files) is averaged by means.
type samples map[string]map[string][]float64

// add parses Go benchmark output (go test -bench, any number of packages)
// with benchfmt. Lines that are not benchmark results are skipped.
func (s samples) add(r io.Reader, fileName string) error {
	br := benchfmt.NewReader(r, fileName)
	for br.Scan() {
		res, ok := br.Result().(*benchfmt.Result)
		if !ok {
			continue // a syntax error or unit metadata: not a result
		}
		name := nameOf(res.Name)
		if s[name] == nil {
			s[name] = map[string][]float64{}
		}
		for _, v := range res.Values {
			// benchfmt rescales units it knows (ns/op -> sec/op); keep
			// what the benchmark printed.
			unit, val := v.Unit, v.Value
			if v.OrigUnit != "" {
				unit, val = v.OrigUnit, v.OrigValue
			}
			s[name][unit] = append(s[name][unit], val)
		}
	}
	if err := br.Err(); err != nil {
		return fmt.Errorf("read %s: %w", fileName, err)
	}
	return nil
}

// means is the mean of each benchmark's measurements per unit.
func (s samples) means() results {
	out := results{}
	for name, units := range s {
		out[name] = map[string]float64{}
		for unit, vals := range units {
			var sum float64
			for _, v := range vals {
				sum += v
			}
			out[name][unit] = sum / float64(len(vals))
		}
	}
	return out
}

// nameOf is the benchmark's name without its -GOMAXPROCS suffix.
func nameOf(n benchfmt.Name) string {
	base, parts := n.Parts()
	var b strings.Builder
	b.Write(base)
	for _, p := range parts {
		if len(p) > 0 && p[0] == '-' {
			continue // GOMAXPROCS
		}
		b.Write(p)
	}
	return b.String()
}

// errMissing says a figure a target needs was not in the output (its
// benchmark did not run, or printed other units).
var errMissing = errors.New("not measured")

// get returns the figures of bench in units, in their order, or
// errMissing naming the first one it lacks.
func (rs results) get(bench string, units ...string) ([]float64, error) {
	out := make([]float64, len(units))
	for i, unit := range units {
		v, ok := rs[bench][unit]
		if !ok {
			return nil, fmt.Errorf("%s %s: %w", bench, unit, errMissing)
		}
		out[i] = v
	}
	return out, nil
}

// target is one of issue 15's targets: what it asks, and how to read it
// from the results.
type target struct {
	asks string
	// eval returns the figures as one line and whether they meet the
	// target; an error when a figure is missing.
	eval func(results) (string, bool, error)
}

// issue15 returns issue 15's targets 1-5, each computed from figures the
// benchmarks print. Target 1's ratio is computed here: its two rates come
// from two benchmarks in two packages.
func issue15() []target {
	return []target{
		{"1. kube-reconciler end to end >= 0.7 x the direct reconcile at 64 in flight", func(rs results) (string, bool, error) {
			direct, err := rs.get("ReconcileSessions/workers=64", "creates/s")
			if err != nil {
				return "", false, err
			}
			e2e, err := rs.get("EndToEnd1000/kube-qps=1000", "sessions/s")
			if err != nil {
				return "", false, err
			}
			if direct[0] <= 0 {
				return "", false, fmt.Errorf("ReconcileSessions/workers=64 creates/s is %v: %w", direct[0], errMissing)
			}
			ratio := e2e[0] / direct[0]
			return fmt.Sprintf("ratio %.2f (%.1f sessions/s end to end, %.1f creates/s direct)", ratio, e2e[0], direct[0]), ratio >= 0.7, nil
		}},
		{"2. runner-manager: 50 at once all Running within the slowest single start + 200 ms", func(rs results) (string, bool, error) {
			f, err := rs.get("EventToRunning50", "over-slowest-ms", "raw-over-slowest-ms", "over-raw-ms")
			if err != nil {
				return "", false, err
			}
			return fmt.Sprintf("+%.0f ms over the slowest start (the raw burst alone: +%.0f ms; over the raw burst: %.0f ms)", f[0], f[1], f[2]), f[0] <= 200, nil
		}},
		{"3. informer initial sync >= 0.6 x raw publish+KV, peak RSS <= 150 MB", func(rs results) (string, bool, error) {
			f, err := rs.get("InitialSync", "ratio-to-raw-js+kv", "informer-peak-RSS-MB")
			if err != nil {
				return "", false, err
			}
			return fmt.Sprintf("ratio %.2f, peak RSS %.0f MB", f[0], f[1]), f[0] >= 0.6 && f[1] <= 150, nil
		}},
		{"4. 1,000 changes/s: API change -> consumer handler p99 <= 5 ms", func(rs results) (string, bool, error) {
			f, err := rs.get("OpenLoop/rate=1000", "p99-ms", "loadavg-start")
			if err != nil {
				return "", false, err
			}
			return fmt.Sprintf("p99 %.1f ms (load average %.2f at the start)", f[0], f[1]), f[0] <= 5, nil
		}},
		{"5. agui-proxy, 100 streams: first byte <= +2 ms p99, <= 30 µs per event, gap ratio >= 0.95, no errors", func(rs results) (string, bool, error) {
			f, err := rs.get("Streams100", "overhead-p99-ms", "proxy-µs/event", "gap-ratio", "proxy-errors", "base-overhead-p99-ms", "base-µs/event")
			if err != nil {
				return "", false, err
			}
			return fmt.Sprintf("first byte +%.1f ms p99, %.1f µs per event, gap ratio %.2f, %.0f errors (bare net/http relay: +%.1f ms, %.1f µs)", f[0], f[1], f[2], f[3], f[4], f[5]),
				f[0] <= 2 && f[1] <= 30 && f[2] >= 0.95 && f[3] == 0, nil
		}},
	}
}

// summarize writes one line per target: met, not met, or not measured.
func summarize(w io.Writer, rs results) error {
	if _, err := fmt.Fprintln(w, "issue 15 targets, from this run:"); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	for _, t := range issue15() {
		line, met, err := t.eval(rs)
		verdict := "not met"
		switch {
		case errors.Is(err, errMissing):
			verdict, line = "not measured", err.Error()
		case err != nil:
			return err
		case met:
			verdict = "met"
		}
		if _, err := fmt.Fprintf(w, "  %s\n      %s: %s\n", t.asks, verdict, line); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
	}
	return nil
}
