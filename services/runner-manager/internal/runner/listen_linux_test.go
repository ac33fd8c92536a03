package runner

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestRunnerListensOnLoopbackOnly: a runner that follows the platform's
// runner in choosing its listen address (ambient_runner's run_ambient_app:
// AGUI_HOST, else 0.0.0.0) listens on 127.0.0.1 only when runner-manager
// starts it with the default advertised host. The runner here is the demo
// runner behind a shell that applies that rule, so the address is what the
// kernel reports for the real process. Before, no AGUI_HOST was passed and
// such a runner listened on every interface, where anyone on the network
// could start runs without passing agui-proxy's authentication.
func TestRunnerListensOnLoopbackOnly(t *testing.T) {
	t.Parallel()
	m := newManager(t, []string{"/bin/sh", "-c", `DEMO_HOST="${AGUI_HOST:-0.0.0.0}" exec "$0"`, demoRunner}, 1, 2)
	p, err := m.Start(t.Context(), Session{ID: "s1", Name: "n", ProjectID: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitHealthy(t.Context(), http.DefaultClient, fastHealth); err != nil {
		t.Fatal(err)
	}
	got := listenAddrs(t, p.Port)
	if !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("runner on port %d listens on %v; want [127.0.0.1] only (AGUI_HOST passed by runner-manager)", p.Port, got)
	}
}

// listenAddrs returns the local addresses of the listening TCP sockets of
// port, from /proc/net/tcp and tcp6 ("0.0.0.0" and "::" are every
// interface).
func listenAddrs(t *testing.T, port int) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		file, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			addr, portHex, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if n, err := strconv.ParseUint(portHex, 16, 16); err != nil || int(n) != port {
				continue
			}
			out = append(out, procNetAddr(addr))
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		_ = file.Close()
	}
	slices.Sort(out)
	return out
}

// procNetAddr turns a /proc/net/tcp address (hex, in host byte order per
// 32-bit word, little-endian here) into its usual notation for the cases
// the test tells apart.
func procNetAddr(hex string) string {
	switch hex {
	case "0100007F":
		return "127.0.0.1"
	case "00000000":
		return "0.0.0.0"
	case "00000000000000000000000000000000":
		return "::"
	case "00000000000000000000000001000000":
		return "::1"
	case "0000000000000000FFFF00000100007F":
		return "::ffff:127.0.0.1"
	}
	return fmt.Sprintf("hex:%s", hex)
}
