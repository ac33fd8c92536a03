package runner

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// testClock is a clock the test moves by hand, so a reuse delay is proven
// at its edge without waiting it out.
type testClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func newTestClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// poolOnOnePort is a pool over one free port whose reuse delay runs on
// clock.
func poolOnOnePort(t *testing.T, clock *testClock, opts ...PoolOption) (*Pool, int) {
	t.Helper()
	low, high := testenv.FreePortRange(t, 1)
	p, err := NewPool(low, high, "", opts...)
	if err != nil {
		t.Fatal(err)
	}
	p.now = clock.Now
	return p, low
}

// acquireWant acquires a port and fails t unless it is want. A port that
// another process bound meanwhile (a parallel test package) is reported as
// busy: then the test proved nothing, and says so.
func acquireWant(t *testing.T, p *Pool, want int, when string) {
	t.Helper()
	got, err := p.Acquire(t.Context())
	switch {
	case err == nil && got == want:
	case errors.Is(err, ErrNoPorts) && !p.free(want):
		t.Skipf("%s: port %d taken by another process meanwhile; rerun", when, want)
	default:
		t.Fatalf("%s: acquire = %d, %v; want %d", when, got, err, want)
	}
}

// TestPoolReuseDelay: a released port is not handed to another runner
// before the reuse delay has passed since its release, and is once it has.
// agui-proxy cut off from NATS keeps routing a released session's clients
// to its host:port (ROUTES_STALE_AFTER); before the delay, the next start
// on a one-port range got that port at once and its runner got another
// session's clients. The delay is not restarted by a second release.
func TestPoolReuseDelay(t *testing.T) {
	t.Parallel()
	const delay = time.Minute
	clock := newTestClock()
	p, port := poolOnOnePort(t, clock, WithReuseDelay(delay))

	acquireWant(t, p, port, "first acquire")
	p.Release(port)
	_, err := p.Acquire(t.Context())
	if !errors.Is(err, ErrNoPorts) {
		t.Fatalf("acquire right after the release: %v, want ErrNoPorts (port %d was released 0s ago, delay %s)", err, port, delay)
	}
	// The operator reads this in the session's NoPortAvailable condition:
	// free ports on the host and no runner need an explanation.
	if want := "runner: no free port in range: 1 released port(s) held back for PORT_REUSE_DELAY (1m0s), the first reusable in 1m0s"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	if p.InUse() != 0 {
		t.Fatalf("InUse = %d while the port waits out its delay, want 0 (handed out: none)", p.InUse())
	}

	clock.Advance(delay - time.Second)
	p.Release(port) // a second release: harmless, the delay still runs from the first
	clock.Advance(time.Second - time.Nanosecond)
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrNoPorts) || !strings.Contains(err.Error(), "reusable in 1s") {
		t.Fatalf("acquire 1ns before the delay ends: %v, want ErrNoPorts reusable in 1s", err)
	}
	clock.Advance(time.Nanosecond)
	acquireWant(t, p, port, "acquire once the delay has passed")

	// Released again: a new delay from this release.
	p.Release(port)
	clock.Advance(delay / 2)
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("acquire half a delay after the second release: %v, want ErrNoPorts", err)
	}
	clock.Advance(delay / 2)
	acquireWant(t, p, port, "acquire a delay after the second release")
}

// TestPoolReuseDelayPrefersOtherPorts: while a released port waits, the
// other free ports of the range are handed out, and the error is plain
// ErrNoPorts only when no port waits.
func TestPoolReuseDelayPrefersOtherPorts(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	low, high := testenv.FreePortRange(t, 2)
	p, err := NewPool(low, high, "", WithReuseDelay(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	p.now = clock.Now
	a, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := low + high - a // the range's other port
	p.Release(a)
	acquireWant(t, p, b, "acquire while the released port waits")
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrNoPorts) || !strings.Contains(err.Error(), "PORT_REUSE_DELAY") {
		t.Fatalf("acquire with one port handed out and one waiting: %v, want ErrNoPorts naming PORT_REUSE_DELAY", err)
	}
	clock.Advance(time.Minute)
	acquireWant(t, p, a, "acquire once the released port's delay has passed")
	if _, err := p.Acquire(t.Context()); !errors.Is(err, ErrNoPorts) || strings.Contains(err.Error(), "PORT_REUSE_DELAY") {
		t.Fatalf("acquire with every port handed out: %v, want plain ErrNoPorts", err)
	}
}

// TestPoolWithoutReuseDelay: delay 0 (PORT_REUSE_DELAY=0, and every pool
// made without the option) hands a released port out again at once, as
// before the delay existed.
func TestPoolWithoutReuseDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []PoolOption
	}{
		{"zero delay", []PoolOption{WithReuseDelay(0)}},
		{"no option", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, port := poolOnOnePort(t, newTestClock(), tc.opts...)
			acquireWant(t, p, port, "first acquire")
			p.Release(port)
			acquireWant(t, p, port, "acquire right after the release")
		})
	}
}

// TestPoolRejectsNegativeReuseDelay: a negative delay is a bug of the
// caller (config.Load refuses it), never taken as 0.
func TestPoolRejectsNegativeReuseDelay(t *testing.T) {
	t.Parallel()
	if _, err := NewPool(9100, 9199, "", WithReuseDelay(-time.Second)); err == nil {
		t.Fatal("negative reuse delay accepted")
	}
}

// TestPoolStartsAtRandomPort: the reuse delay is lost with the process,
// so a restarted runner-manager does not begin its round-robin at the
// range's first port, which its previous incarnation handed out (and
// released) first too. Before, every pool began at low.
func TestPoolStartsAtRandomPort(t *testing.T) {
	t.Parallel()
	const low, high, pools = 9100, 9199, 64
	starts := map[int]bool{}
	for range pools {
		p, err := NewPool(low, high, "")
		if err != nil {
			t.Fatal(err)
		}
		if p.next < low || p.next > high {
			t.Fatalf("round-robin starts at %d, outside %d-%d", p.next, low, high)
		}
		starts[p.next] = true
	}
	// 64 pools over 100 ports all starting at one port by chance: 100^-63.
	if len(starts) < 2 {
		t.Fatalf("%d pools all start at %v, want random starts over %d-%d", pools, starts, low, high)
	}
}
