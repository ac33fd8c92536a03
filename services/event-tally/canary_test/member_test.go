package canary_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
	"github.com/ambient-code/control-plane/libs/tally"
	"github.com/ambient-code/control-plane/libs/testenv"
	"github.com/ambient-code/control-plane/services/event-tally/internal/app"
)

// envTestLog, when set, prints every member's whole log at the end.
const envTestLog = "TEST_LOG"

// stopTimeout bounds a member's graceful stop (group stop grace is 10 s, but
// event-tally's handler never blocks, so it exits within a second).
const stopTimeout = 15 * time.Second

// member is one running event-tally process.
type member struct {
	t    *testing.T
	name string
	addr string // METRICS_ADDR: /tally, /readyz
	cmd  *exec.Cmd
	out  *testenv.Buffer

	exited  chan struct{} // closed once the process has exited
	waitErr error         // cmd.Wait's result; read only after exited is closed
	stopped bool          // stop was called (test goroutine only)
}

// startMember runs event-tally as group member name, with partitions
// memberPartitions (GROUP_MEMBER_PARTITIONS, e.g. "3,11"; empty for a stable member), and
// waits until it answers /readyz. The process is stopped with SIGTERM in
// t.Cleanup unless the test stopped it; its log is printed when the test
// fails.
func startMember(t *testing.T, natsURL, name, memberPartitions string) *member {
	t.Helper()
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(tallyBin)
	// An explicit environment: nothing from the test's own (e.g. an OTLP
	// endpoint) leaks into the member.
	cmd.Env = []string{
		bus.EnvNATSURL + "=" + natsURL,
		group.EnvGroup + "=" + groupName,
		group.EnvMemberID + "=" + name,
		group.EnvPartitions + "=" + strconv.Itoa(partitions),
		group.EnvMemberPartitions + "=" + memberPartitions,
		service.EnvMetricsAddr + "=" + addr,
		service.EnvLogLevel + "=debug",
	}
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	m := &member{t: t, name: name, addr: addr, cmd: cmd, out: out, exited: make(chan struct{})}
	// Owned by m: ends when the process exits, which stop or the cleanup
	// below causes.
	go func() {
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		if !m.stopped {
			if err := m.stop(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		switch {
		case os.Getenv(envTestLog) != "":
			t.Logf("%s output:\n%s", name, out.String())
		case t.Failed():
			t.Logf("%s output:\n%s", name, tail(out.String(), 60))
		}
	})
	testenv.Eventually(t, 15*time.Second, func() error {
		select {
		case <-m.exited:
			// Not retried: a port taken since freeAddr also ends here.
			t.Fatalf("%s exited before ready: %v", name, m.waitErr)
		default:
		}
		code, err := m.get(t.Context(), "/readyz", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s /readyz: %d", name, code)
		}
		return nil
	})
	return m
}

// stop sends SIGTERM and waits for the process to exit; a clean exit
// (status 0) returns nil.
func (m *member) stop() error {
	m.stopped = true
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sigterm %s: %w", m.name, err)
	}
	select {
	case <-m.exited:
		if m.waitErr != nil {
			return fmt.Errorf("%s exit: %w", m.name, m.waitErr)
		}
		return nil
	case <-time.After(stopTimeout):
		if err := m.cmd.Process.Kill(); err != nil {
			return fmt.Errorf("%s did not stop within %s; kill: %w", m.name, stopTimeout, err)
		}
		<-m.exited
		return fmt.Errorf("%s did not stop within %s (killed)", m.name, stopTimeout)
	}
}

// tally reads the member's /tally with the seen ids.
func (m *member) tally(ctx context.Context) (tally.Snapshot, error) {
	var s tally.Snapshot
	code, err := m.get(ctx, app.PathTally+"?ids=true", &s)
	if err != nil {
		return s, err
	}
	if code != http.StatusOK {
		return s, fmt.Errorf("%s %s: %d", m.name, app.PathTally, code)
	}
	return s, nil
}

// get GETs path and decodes a JSON body into v (when non-nil).
func (m *member) get(ctx context.Context, path string, v *tally.Snapshot) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.addr+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only body
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode: %w", m.name, path, err)
		}
	}
	return resp.StatusCode, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
