package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// TestTokenFile: AMBIENT_API_TOKEN_FILE gives memapi its token from a file
// (docker compose mounts one secret file into memapi and the services that
// call it), trailing line break dropped as the services' clients drop it:
// a call with the file's token is served, one with another token is not.
// memapi refused to start without AMBIENT_API_TOKEN before.
func TestTokenFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts memapi as a child process")
	}
	file := filepath.Join(t.TempDir(), "api-token")
	if err := os.WriteFile(file, []byte("file0token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := testenv.FreePortRange(t, 2)
	grpcPort, restPort := p, p+1
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MEMAPI_TEST_RUN_MAIN=1", "AMBIENT_API_TOKEN_FILE="+file,
		"MEMAPI_GRPC_ADDR=127.0.0.1:"+strconv.Itoa(grpcPort), "MEMAPI_REST_ADDR=127.0.0.1:"+strconv.Itoa(restPort))
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	// Owned by this test: ends with the child, which the cleanup stops.
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // gone already when it exited on its own
		if err := <-exited; err != nil {
			t.Logf("memapi: %v", err)
		}
	})
	projects := "http://127.0.0.1:" + strconv.Itoa(restPort) + "/api/ambient/v1/projects"
	status := func(token string) (int, error) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, projects, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		return resp.StatusCode, resp.Body.Close()
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("memapi exited: %v; output:\n%s", err, out)
		default:
		}
		code, err := status("file0token")
		if err != nil {
			return fmt.Errorf("REST not up: %w", err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET projects with the file's token: %d, want 200", code)
		}
		return nil
	})
	if code, err := status("other0token"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("GET projects with another token: %d (%v), want 401", code, err)
	}
}
