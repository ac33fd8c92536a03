package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// output is make bench's output in the shape go test prints it: headers
// per package, results with the -GOMAXPROCS suffix, a benchmark printed
// twice (-count 2) and lines that are not results.
const output = `goos: linux
goarch: amd64
pkg: github.com/ambient-code/control-plane/services/kube-reconciler/internal/reconcile
BenchmarkReconcileSessions/workers=1-2    	       1	9000000000 ns/op	       100.0 creates/s
BenchmarkReconcileSessions/workers=64-2   	       1	2896927127 ns/op	       600.0 creates/s	       777.4 noop-reconciles/s
BenchmarkReconcileSessions/workers=64-2   	       1	2706038640 ns/op	       700.0 creates/s	       845.5 noop-reconciles/s
PASS
pkg: github.com/ambient-code/control-plane/services/kube-reconciler/internal/app
BenchmarkEndToEnd1000/kube-qps=1000-2     	       1	2313885709 ns/op	      1900 bench-process-cpu-µs/session	       490.0 sessions/s
BenchmarkEndToEnd1000/kube-qps=default-2  	       1	2313885709 ns/op	        55.0 sessions/s
pkg: github.com/ambient-code/control-plane/services/runner-manager/internal/app
BenchmarkEventToRunning50-2   	       4	 763354557 ns/op	       747.2 all-running-ms	       140.8 over-raw-ms	       199.5 over-slowest-ms	       178.7 raw-over-slowest-ms
pkg: github.com/ambient-code/control-plane/services/informer/internal/app
BenchmarkInitialSync-2   	       1	14708940112 ns/op	        56.60 cpu-µs/object	       123.7 informer-peak-RSS-MB	         0.5911 ratio-to-raw-js+kv
BenchmarkInitialSyncInProcess-2   	       1	7215593902 ns/op	     16203 objects/s
BenchmarkOpenLoop/rate=1000-2         	       1	15581589147 ns/op	         0.9700 loadavg-start	         4.390 p99-ms
BenchmarkOpenLoop/rate=4000-2         	       1	15581589147 ns/op	         0.9700 loadavg-start	        40.0 p99-ms
ok  	github.com/ambient-code/control-plane/services/informer/internal/app	60.1s
`

// read parses in as one input.
func read(in, fileName string) (results, error) {
	s := samples{}
	if err := s.add(strings.NewReader(in), fileName); err != nil {
		return nil, err
	}
	return s.means(), nil
}

func TestSummaryOfEveryTarget(t *testing.T) {
	rs, err := read(output, "output")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := summarize(&out, rs); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// The mean of the two direct runs (650) against the end-to-end
		// rate at the same client limits, not the default QPS one.
		"met: ratio 0.75 (490.0 sessions/s end to end, 650.0 creates/s direct)",
		"met: +200 ms over the slowest start (the raw burst alone: +179 ms; over the raw burst: 141 ms)",
		"not met: ratio 0.59, peak RSS 124 MB",
		"met: p99 4.4 ms (load average 0.97 at the start)",
		"not measured: Streams100 overhead-p99-ms: not measured",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

func TestNameWithoutGOMAXPROCS(t *testing.T) {
	rs, err := read("BenchmarkOpenLoop/rate=1000-16 1 5 ns/op 3 p99-ms\nBenchmarkStreams100 1 5 ns/op 1 gap-ratio\n", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rs["OpenLoop/rate=1000"]["p99-ms"]; !ok {
		t.Errorf("OpenLoop/rate=1000 not found in %v", rs)
	}
	if _, ok := rs["Streams100"]["gap-ratio"]; !ok {
		t.Errorf("Streams100 not found in %v", rs)
	}
	// ns/op as printed, not rescaled to seconds.
	if got := rs["Streams100"]["ns/op"]; got != 5 {
		t.Errorf("ns/op = %v, want 5", got)
	}
}

func TestRunReadsFilesAndStdin(t *testing.T) {
	var out bytes.Buffer
	if err := run(nil, strings.NewReader(output), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ratio 0.75") {
		t.Errorf("from stdin:\n%s", out.String())
	}
	if err := run([]string{"/nonexistent/bench.txt"}, nil, &out); err == nil {
		t.Error("a missing file was not an error")
	}
	// A benchmark in two files is averaged, as it is within one file.
	dir := t.TempDir()
	var paths []string
	for i, p99 := range []string{"4", "6"} {
		path := filepath.Join(dir, fmt.Sprintf("bench%d.txt", i))
		line := "BenchmarkOpenLoop/rate=1000-2 1 5 ns/op " + p99 + " p99-ms 0.5 loadavg-start\n"
		if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	out.Reset()
	if err := run(paths, nil, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "p99 5.0 ms") {
		t.Errorf("from two files:\n%s", out.String())
	}
}

// FuzzSummary: any input is read without a panic, and every target gets a
// line (met, not met or not measured), never an error.
func FuzzSummary(f *testing.F) {
	f.Add(output)
	f.Add("BenchmarkEndToEnd1000/kube-qps=1000-2 1 5 ns/op 0 sessions/s\n")
	f.Add("BenchmarkX 1 NaN ns/op\nBenchmark\n")
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := read(in, "fuzz")
		if err != nil {
			return // an I/O error; strings.Reader has none, benchfmt skips bad lines
		}
		var out bytes.Buffer
		if err := summarize(&out, rs); err != nil {
			t.Fatalf("summarize: %v", err)
		}
		if n := strings.Count(out.String(), "\n      "); n != len(issue15()) {
			t.Fatalf("%d target lines, want %d:\n%s", n, len(issue15()), out.String())
		}
	})
}
