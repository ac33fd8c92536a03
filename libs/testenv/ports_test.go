package testenv

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortRange(t *testing.T) {
	low, high := FreePortRange(t, 5)
	if high-low != 4 {
		t.Fatalf("range %d-%d, want 5 ports", low, high)
	}
	if high >= ephemeralLow() {
		t.Fatalf("range %d-%d reaches the ephemeral ports (from %d)", low, high, ephemeralLow())
	}
	for p := low; p <= high; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d of %d-%d not free: %v", p, low, high, err)
		}
		_ = l.Close()
	}
}
