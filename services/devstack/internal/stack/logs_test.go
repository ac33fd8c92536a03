package stack

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// exitLog is the supervisor's own log: it keeps the lines and signals
// each write (one per exit).
type exitLog struct {
	out    *testenv.Buffer
	exited chan struct{}
}

func (l exitLog) Write(p []byte) (int, error) {
	n, err := l.out.Write(p)
	l.exited <- struct{}{}
	return n, err
}

// superviseShell supervises `sh -c script` as service "kid", its output
// and the supervisor's lines in out, until the returned stop is called.
func superviseShell(t *testing.T, script string, out *testenv.Buffer, exited chan struct{}) (s *supervised, stop func()) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	logs := &logWriter{out: out, raw: true, width: 3}
	svc := service{name: "kid", binary: filepath.Base(sh), args: []string{"-c", script}}
	s = newSupervised(svc, Config{BinDir: filepath.Dir(sh)}, logs, t.TempDir(), exitLog{out: out, exited: exited})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }() // owned by the test: ends after stop
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := s.proc.Stop(t.Context(), 5*time.Second); err != nil {
				t.Errorf("stop: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// TestChildLastLineWithoutNewlineIsShown: a child whose last output lacks
// the newline has it shown when it exits, before devstack's exit line,
// and a restart's output starts a line of its own.
func TestChildLastLineWithoutNewlineIsShown(t *testing.T) {
	t.Parallel()
	var out testenv.Buffer
	exited := make(chan struct{}, 4)
	_, stop := superviseShell(t, `printf "no newline"; exit 3`, &out, exited)
	for i := range 2 { // the first run and its restart
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("exit %d not seen; output:\n%s", i+1, out.String())
		}
	}
	stop()
	lines := strings.Split(out.String(), "\n")
	for i, want := range []string{"kid | no newline", "devstack: kid exited (exit status 3)", "kid | no newline", "devstack: kid exited (exit status 3)"} {
		if i >= len(lines) || !strings.HasPrefix(lines[i], want) || strings.HasPrefix(want, "kid") && lines[i] != want {
			t.Fatalf("output line %d: want %q; output:\n%s", i+1, want, out.String())
		}
	}
}

// TestChildLastLineWithoutNewlineIsShownOnStop: the same when devstack
// stops the child (no OnExit then).
func TestChildLastLineWithoutNewlineIsShownOnStop(t *testing.T) {
	t.Parallel()
	var out testenv.Buffer
	s, stop := superviseShell(t, `printf "bye"; exec sleep 60`, &out, make(chan struct{}, 4))
	// The partial line has reached the writer before the stop.
	testenv.Eventually(t, 10*time.Second, func() error {
		s.out.mu.Lock()
		defer s.out.mu.Unlock()
		if string(s.out.buf) != "bye" {
			return fmt.Errorf("pending output %q, want bye", s.out.buf)
		}
		return nil
	})
	stop()
	if got := out.String(); got != "kid | bye\n" {
		t.Errorf("output after stop = %q, want %q", got, "kid | bye\n")
	}
}
