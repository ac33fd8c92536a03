package service_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/service"
)

// Environment of the child process that runs service.Main.
const (
	envHelper  = "SERVICE_TEST_MAIN" // set: this process is the child
	envWorkers = "SVC_TEST_WORKERS"  // a variable of the child's own config
	envMode    = "SVC_TEST_MODE"     // "fail": run fails; "memlimit": run prints the memory limit and returns; "memlimit-follow": also the next one it changes to; "nats-closed": service.Run publishes longSubject; otherwise it waits for a signal
)

// helperConfig is a service Config as services write theirs.
type helperConfig struct {
	service.Config
	Workers int
}

// helperMain is the child's main: a service made of service.Main alone.
func helperMain() {
	if os.Getenv(envHelper) == "" {
		return
	}
	service.Main("svc-test", func() (helperConfig, error) {
		l := envconfig.New(nil)
		c := helperConfig{Config: service.LoadConfig(l, service.Config{}), Workers: l.Int(envWorkers, 1, 1, 4)}
		return c, l.Err()
	}, func(ctx context.Context, cfg helperConfig, log *slog.Logger) error {
		switch os.Getenv(envMode) {
		case "fail":
			return errors.New("backend unreachable")
		case "memlimit":
			_, err := fmt.Fprintf(os.Stdout, "limit=%d\n", debug.SetMemoryLimit(-1))
			return err
		case "memlimit-follow":
			return printLimitChange(ctx)
		case "nats-closed":
			return service.Run(ctx, service.Options{Name: "svc-test", Config: cfg.Config, Logger: log}, func(_ context.Context, rt *service.Runtime) error {
				rt.Go("long-subject", func(ctx context.Context) error {
					if err := rt.NATS().Publish(longSubject, nil); err != nil {
						return err
					}
					<-ctx.Done()
					return nil
				})
				return nil
			})
		}
		log.Debug("debug logs are on")
		// The parent waits for this line; a failed write fails its wait.
		_, _ = fmt.Fprintln(os.Stdout, "running")
		<-ctx.Done()
		log.Info("stopped by signal")
		return nil
	})
}

// printLimitChange prints the runtime's memory limit, waits for it to
// change (the runtime has no notice of that: it is polled) and prints the
// new one.
func printLimitChange(ctx context.Context) error {
	first := debug.SetMemoryLimit(-1)
	if _, err := fmt.Fprintf(os.Stdout, "limit=%d\n", first); err != nil {
		return err
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if now := debug.SetMemoryLimit(-1); now != first {
				_, err := fmt.Fprintf(os.Stdout, "limit=%d\n", now)
				return err
			}
		}
	}
}

// TestMainExits runs service.Main in a child process: a configuration
// error names the variable and exits 1, a failing run exits 1 with its
// error, and SIGTERM ends a run cleanly with exit 0.
func TestMainExits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		env        []string
		signal     bool
		wantCode   int
		wantStderr []string
	}{
		{name: "bad variables", env: []string{envWorkers + "=9", service.EnvLogLevel + "=loud"}, wantCode: 1,
			wantStderr: []string{"svc-test: ", envWorkers + ":", service.EnvLogLevel + ":"}},
		{name: "run fails", env: []string{envMode + "=fail"}, wantCode: 1, wantStderr: []string{"svc-test: backend unreachable"}},
		{name: "sigterm", env: []string{service.EnvLogLevel + "=debug"}, signal: true, wantCode: 0,
			wantStderr: []string{`"msg":"debug logs are on"`, `"msg":"stopped by signal"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runChild(t, tc.env, tc.signal)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q lacks %q", stderr, want)
				}
			}
		})
	}
}

// TestMainExitsWhenNATSClosesForGood: a service whose NATS connection
// nats.go closed for good exits 1, naming the cause, so the kubelet (or
// docker-compose's restart policy) starts it afresh. The process lived on
// before, unready and doing nothing; runChild kills it after its bound.
func TestMainExitsWhenNATSClosesForGood(t *testing.T) {
	t.Parallel()
	srv := natsClosingServer(t)
	code, stderr := runChild(t, []string{envMode + "=nats-closed", bus.EnvNATSURL + "=" + srv.ClientURL(), service.EnvMetricsAddr + "=127.0.0.1:0"}, false)
	if code != 1 {
		t.Errorf("exit code = %d, want 1 (-1: still running after %s, killed; stderr %q)", code, childTimeout, stderr)
	}
	if want := "svc-test: nats connection closed for good: nats: maximum control line exceeded"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q lacks %q", stderr, want)
	}
}

// TestMainErrorIsOneLine: every bad variable is named at once, on the one
// line "<name>: ..." the docs promise (docs/operations.md#logs), not
// one line per variable with the service's name on the first only.
func TestMainErrorIsOneLine(t *testing.T) {
	t.Parallel()
	code, stderr := runChild(t, []string{envWorkers + "=9", service.EnvLogLevel + "=loud"}, false)
	if code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "svc-test: ") ||
		!strings.Contains(lines[0], envWorkers+":") || !strings.Contains(lines[0], service.EnvLogLevel+":") {
		t.Errorf("stderr = %q, want one line \"svc-test: ...\" naming %s and %s", stderr, envWorkers, service.EnvLogLevel)
	}
}

// childTimeout bounds a child of runChild.
const childTimeout = 60 * time.Second

// runChild runs this test binary as the helper service; with signal it
// sends SIGTERM once the child runs. It returns the exit code and stderr.
func runChild(t *testing.T, env []string, signal bool) (int, string) {
	t.Helper()
	// Bounded: a child that does not exit when it should fails its test
	// (killed: exit code -1) instead of hanging the package.
	ctx, cancel := context.WithTimeout(t.Context(), childTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{envHelper + "=1"}, env...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	running := make(chan struct{}) // closed when the child says it runs
	// Owned by runChild: reads stdout until the child exits; Wait below
	// returns only after the pipe is drained.
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "running" {
				close(running)
			}
		}
	}()
	if signal {
		select {
		case <-running:
		case <-time.After(30 * time.Second):
			t.Fatal("child did not start running")
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("signal: %v", err)
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	default:
		t.Fatalf("child: %v", err)
		return -1, ""
	}
}
