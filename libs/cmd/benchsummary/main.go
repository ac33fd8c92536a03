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
	all := samples{}
	if len(args) == 0 {
		if err := all.add(stdin, "stdin"); err != nil {
			return err
		}
	}
	for _, path := range args {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open benchmark output: %w", err)
		}
		err = all.add(f, path)
		_ = f.Close() // read-only: nothing to flush
		if err != nil {
			return err
		}
	}
	return summarize(stdout, all.means())
}
