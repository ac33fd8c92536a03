package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestMain runs main instead of the tests when the test binary is started
// as memapi by TestCleanStopWithCollectorGone.
func TestMain(m *testing.M) {
	if os.Getenv("MEMAPI_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestCleanStopWithCollectorGone: SIGTERM stops memapi with exit 0 even
// when its last telemetry flush fails (the collector left first); it used
// to exit 1 with the flush error, as if it had crashed.
func TestCleanStopWithCollectorGone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memapi as a child process")
	}
	p, _ := testenv.FreePortRange(t, 3)
	gone, grpcPort, restPort := p, p+1, p+2 // nothing listens on gone: every export is refused
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MEMAPI_TEST_RUN_MAIN=1", "AMBIENT_API_TOKEN=t", "LOG_LEVEL=info",
		"MEMAPI_GRPC_ADDR=127.0.0.1:"+strconv.Itoa(grpcPort), "MEMAPI_REST_ADDR=127.0.0.1:"+strconv.Itoa(restPort),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:"+strconv.Itoa(gone), "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(restPort))
		if err != nil {
			return fmt.Errorf("REST not up: %w", err)
		}
		return c.Close()
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("memapi after SIGTERM: %v, want exit 0; output:\n%s", err, &out)
	}
	if !strings.Contains(out.String(), "telemetry flush failed") {
		t.Errorf("the failed flush was not logged; output:\n%s", &out)
	}
}
