package testenv

import (
	"net"
	"strconv"
	"testing"
)

// FreePortRange returns n consecutive loopback ports that were all free a
// moment ago (a runner port pool for a test). Another process may take one
// before the test binds it; tests using it must tolerate a busy port the
// way the code under test does.
func FreePortRange(t testing.TB, n int) (low, high int) {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		low = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close() // only probing
		if low+n-1 > 65535 {
			continue
		}
		if rangeFree(low, n) {
			return low, low + n - 1
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0, 0
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
