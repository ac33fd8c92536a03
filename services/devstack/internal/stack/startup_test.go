package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestServiceFailingAtStartEndsStartUp runs the stack with an API binary
// that fails at start as a service with a bad setting does: the start-up
// ends after a few restarts, naming the exits, instead of restarting it
// until --ready-timeout and then blaming a refused connection.
func TestServiceFailingAtStartEndsStartUp(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"memapi", "informer", "event-tally", "runner-manager", "agui-proxy", "demo-runner"} {
		script := "#!/bin/sh\necho \"" + b + ": MEMAPI_REST_ADDR: want HOST:PORT\" >&2\nexit 3\n"
		if err := os.WriteFile(filepath.Join(bin, b), []byte(script), 0o700); err != nil { //nolint:gosec // an executable test script
			t.Fatal(err)
		}
	}
	p, _ := testenv.FreePortRange(t, 4+6+10)
	// A ready timeout far longer than the start-up should take: a Run that
	// waits for it cannot pass the bound below, one that does not takes
	// about 3 s, however loaded the machine.
	const readyTimeout = 2 * time.Minute
	cfg, err := ParseFlags([]string{"--bin-dir", bin, "--state-dir", t.TempDir(), "--ready-timeout", readyTimeout.String(),
		"--nats-port", strconv.Itoa(p), "--api-grpc-port", strconv.Itoa(p + 1), "--api-rest-port", strconv.Itoa(p + 2),
		"--proxy-port", strconv.Itoa(p + 3), "--metrics-port-base", strconv.Itoa(p + 4),
		"--runner-ports", fmt.Sprintf("%d-%d", p+10, p+19)}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	out := &testenv.Buffer{}
	start := time.Now()
	err = Run(t.Context(), t.Context(), cfg, out)
	took := time.Since(start)
	const want = `api did not become ready: crash loop: it exited 3 times, the last time with exit status 3 (its output is above, lines prefixed "api |")`
	if err == nil || err.Error() != want {
		t.Errorf("Run = %v\nwant %s", err, want)
	}
	// Three exits with 1 s and 2 s between them; the deadline is far off.
	if took > readyTimeout/2 {
		t.Errorf("Run took %s: it waited for --ready-timeout (%s)", took, readyTimeout)
	}
	if !strings.Contains(out.String(), "memapi: MEMAPI_REST_ADDR: want HOST:PORT") {
		t.Errorf("the service's own error is not in the output:\n%s", out)
	}
}
