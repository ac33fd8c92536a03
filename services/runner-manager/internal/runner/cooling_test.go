package runner

import (
	"errors"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/testenv"
)

// TestPoolCoolingPortsAreNotFree: a port that waits out the reuse delay
// is neither free (Free, which Manager.Free counts starts by) nor a plain
// shortage: Acquire's error is a *PortsCoolingError (still ErrNoPorts)
// that says when the first port is reusable, and ReusableIn says the
// same. Before, Free was Size-InUse and counted the cooling port, and the
// shortage could be told apart only by its message.
func TestPoolCoolingPortsAreNotFree(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	low, high := testenv.FreePortRange(t, 2)
	p, err := NewPool(low, high, "", WithReuseDelay(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	p.now = clock.Now
	if got := p.Free(); got != 2 {
		t.Fatalf("Free of a fresh two-port pool = %d, want 2", got)
	}
	if _, ok := p.ReusableIn(); ok {
		t.Fatal("ReusableIn of a pool with no released port: ok, want none")
	}
	a, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := low + high - a
	p.Release(a)
	if got := p.Free(); got != 1 {
		t.Fatalf("Free with one port cooling and one free = %d, want 1", got)
	}
	acquireWant(t, p, b, "acquire while the released port cools")
	if got := p.Free(); got != 0 {
		t.Fatalf("Free with one port cooling and one in use = %d, want 0 (the cooling port serves no start)", got)
	}
	clock.Advance(20 * time.Second)
	if wait, ok := p.ReusableIn(); !ok || wait != 40*time.Second {
		t.Fatalf("ReusableIn 20s into a 1m delay = %s, %v; want 40s, true", wait, ok)
	}
	_, err = p.Acquire(t.Context())
	var cooling *PortsCoolingError
	if !errors.As(err, &cooling) || !errors.Is(err, ErrNoPorts) {
		t.Fatalf("acquire with the only other port cooling: %v, want a *PortsCoolingError that is ErrNoPorts", err)
	}
	if cooling.Cooling != 1 || cooling.ReusableIn != 40*time.Second || cooling.Delay != time.Minute {
		t.Fatalf("cooling error %+v, want 1 port reusable in 40s of a 1m delay", *cooling)
	}
	clock.Advance(40 * time.Second)
	if got := p.Free(); got != 1 {
		t.Fatalf("Free once the delay has passed = %d, want 1", got)
	}
	if _, ok := p.ReusableIn(); ok {
		t.Fatal("ReusableIn once the delay has passed: ok, want none")
	}
	acquireWant(t, p, a, "acquire once the delay has passed")
	p.Release(a)
	p.Release(b)
	clock.Advance(time.Second)
	// Every port released, none reusable: still a cooling shortage (it
	// ends by itself), not a plain ErrNoPorts.
	if _, err := p.Acquire(t.Context()); !errors.As(err, &cooling) || cooling.Cooling != 2 || cooling.ReusableIn != 59*time.Second {
		t.Fatalf("acquire with both ports cooling: %v, want a *PortsCoolingError of 2 ports, the first reusable in 59s", err)
	}
}

// TestPoolAllTakenIsNoCoolingError: a range all handed out is a plain
// ErrNoPorts, no *PortsCoolingError: that shortage does not end by itself.
func TestPoolAllTakenIsNoCoolingError(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	p, port := poolOnOnePort(t, clock, WithReuseDelay(time.Minute))
	acquireWant(t, p, port, "first acquire")
	_, err := p.Acquire(t.Context())
	var cooling *PortsCoolingError
	if !errors.Is(err, ErrNoPorts) || errors.As(err, &cooling) {
		t.Fatalf("acquire with the only port in use: %v, want plain ErrNoPorts", err)
	}
}
