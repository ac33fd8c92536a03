package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePortRange returns n consecutive loopback ports that were all free a
// moment ago (a runner port pool for a test). It picks them below the
// kernel's ephemeral range: a port from there (what 127.0.0.1:0 hands out)
// can be taken at any time as the local port of some outgoing connection of
// a parallel test, which made a freed runner port unusable again.
func FreePortRange(t testing.TB, n int) (low, high int) {
	t.Helper()
	ceiling := ephemeralLow() - n
	const floor = 10000
	for range 200 {
		if ceiling > floor {
			low = floor + rand.IntN(ceiling-floor)
		} else {
			low = kernelPort(t)
		}
		if low+n-1 <= 65535 && rangeFree(low, n) {
			return low, low + n - 1
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0, 0
}

// ephemeralLow is the first port the kernel hands out for outgoing
// connections (Linux: /proc/sys/net/ipv4/ip_local_port_range; 32768, the
// Linux default, elsewhere).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return 32768
	}
	return low
}

// kernelPort is a port the kernel picks (ephemeral range).
func kernelPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close() //nolint:errcheck // only probing
	return ln.Addr().(*net.TCPAddr).Port
}

func rangeFree(low, n int) bool {
	for p := low; p < low+n; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		_ = l.Close() // only probing
	}
	return true
}

// FreeAddr is a loopback "127.0.0.1:PORT" that was free a moment ago, from
// below the ephemeral range (see FreePortRange), for a child process that
// takes its listen address from the environment.
func FreeAddr(t testing.TB) string {
	t.Helper()
	p, _ := FreePortRange(t, 1)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}
