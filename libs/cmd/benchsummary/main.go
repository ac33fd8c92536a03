// Command benchsummary reads the output of the project's benchmarks (make
// bench) and prints issue 15's targets with the figures that decide them:
// each ratio, including kube-reconciler's end-to-end/direct ratio, whose
// two rates come from benchmarks in two packages.
//
//	go test -bench . ... | tee bench.txt
//	benchsummary bench.txt    (or standard input without a file)
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	all := results{}
	if len(args) == 0 {
		rs, err := read(stdin, "stdin")
		if err != nil {
			return err
		}
		all = rs
	}
	for _, path := range args {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open benchmark output: %w", err)
		}
		rs, err := read(f, path)
		_ = f.Close() // read-only: nothing to flush
		if err != nil {
			return err
		}
		for name, units := range rs {
			all[name] = units
		}
	}
	return summarize(stdout, all)
}
