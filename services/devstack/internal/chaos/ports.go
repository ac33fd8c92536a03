package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// freePortBlock returns the first of n consecutive loopback ports that were
// all free a moment ago. Like libs/testenv.FreePortRange it searches below
// the kernel's ephemeral range: a port from there can be taken at any time
// as the local port of an outgoing connection, and the harness restarts
// servers on their ports after every outage.
func freePortBlock(n int) (int, error) {
	const floor = 10000
	ceiling := ephemeralLow() - n
	if ceiling <= floor {
		return 0, fmt.Errorf("no room for %d ports between %d and the ephemeral range", n, floor)
	}
	for range 200 {
		low := floor + rand.IntN(ceiling-floor) //nolint:gosec // a port choice, not a secret
		if rangeFree(low, n) {
			return low, nil
		}
	}
	return 0, errors.New("no block of free ports found")
}

// ephemeralLow is the first port the kernel hands out for outgoing
// connections (32768, the Linux default, when unknown).
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

func rangeFree(low, n int) bool {
	for p := low; p < low+n; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		_ = l.Close() //nolint:errcheck // only probing
	}
	return true
}

// portAlloc hands out the ports of a block in order.
type portAlloc struct{ next, end int }

func (a *portAlloc) take() int {
	if a.next >= a.end {
		// The block is sized from the same constants that take from it.
		return 0
	}
	a.next++
	return a.next - 1
}

// takeRange returns n consecutive ports as "LOW-HIGH".
func (a *portAlloc) takeRange(n int) string {
	low := a.take()
	for range n - 1 {
		a.take()
	}
	return fmt.Sprintf("%d-%d", low, low+n-1)
}
