package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ambient-code/control-plane/libs/telemetry"
)

// RunFunc runs a service until ctx ends; app.Run has this shape once its
// options are bound.
type RunFunc[C Configured] func(ctx context.Context, cfg C, log *slog.Logger) error

// Main is the whole main function of a service named name. It stops on
// SIGINT or SIGTERM (cancelling run's ctx), loads the configuration with
// load, builds the JSON slog logger at cfg's LogLevel on stderr (the only
// logger the service makes), sets the Go runtime's soft memory limit from
// the container's and keeps it following a resize (memoryLimit), and calls
// run. It exits 0 when run returns nil and 1, after one line
// "<name>: <error>" on stderr, when the configuration does not load (the
// error names each bad variable) or run fails. It never returns.
func Main[C Configured](name string, load func() (C, error), run RunFunc[C]) {
	// main's own context: the root every service ctx derives from.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mainCode(ctx, name, load, run, os.Stderr)
	stop()
	os.Exit(code)
}

// mainCode is Main without the signals and the exit, for tests.
func mainCode[C Configured](ctx context.Context, name string, load func() (C, error), run RunFunc[C], stderr io.Writer) int {
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(err))
		return 1
	}
	log, err := telemetry.NewLogger(cfg.ServiceConfig().LogLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(err))
		return 1
	}
	sc := cfg.ServiceConfig()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if lim := newMemoryLimit(sc.MemoryLimitRatio, memlimit.FromCgroup, os.Getenv, log); lim != nil && sc.MemoryLimitRefresh > 0 {
		wg.Go(func() { lim.follow(runCtx, sc.MemoryLimitRefresh) })
	}
	if err := run(runCtx, cfg, log); err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(err))
		return 1
	}
	return 0
}

// oneLine is err's message on one line: errors.Join (every bad variable of
// a configuration, a part's error joined with a shutdown error) separates
// its errors with line breaks, and a log collector would take each line
// after the first for a record of its own, without the service's name.
func oneLine(err error) string {
	return strings.Join(strings.FieldsFunc(err.Error(), func(r rune) bool { return r == '\n' || r == '\r' }), "; ")
}
