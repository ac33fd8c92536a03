package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
)

// spinEnv makes the test binary a helper that spins until getrusage says it
// has used spinCPU, prints "spun", and then waits to be killed.
const (
	spinEnv = "TESTENV_SPIN_HELPER"
	spinCPU = 300 * time.Millisecond
)

// TestProcessCPUMatchesRusage: ProcessCPU of a helper that spun until its
// own getrusage said spinCPU is spinCPU, to the tick; a sleeping process
// has used next to nothing; ChildPIDs and CPUByProcess find both under
// this process.
func TestProcessCPUMatchesRusage(t *testing.T) {
	if os.Getenv(spinEnv) == "1" {
		spinHelper()
		return
	}
	spin := exec.Command(os.Args[0], "-test.run", "^TestProcessCPUMatchesRusage$")
	spin.Env = append(os.Environ(), spinEnv+"=1")
	out, err := spin.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Never written: the helper blocks reading it until it is killed.
	if _, err := spin.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	idle := exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{spin, idle} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "spun\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	busy, err := ProcessCPU(spin.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// getrusage counts in finer units than the 10 ms ticks of /proc.
	if busy < spinCPU-2*clockTick || busy > spinCPU+200*time.Millisecond {
		t.Errorf("ProcessCPU of the spinner %v, its rusage said %v", busy, spinCPU)
	}
	calm, err := ProcessCPU(idle.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if calm > 50*time.Millisecond {
		t.Errorf("ProcessCPU of sleep %v, want about 0", calm)
	}
	children, err := ChildPIDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(os.Args[0])
	if len(name) > 15 {
		name = name[:15] // comm is cut to 15 characters
	}
	if !slices.Contains(children["sleep"], idle.Process.Pid) || !slices.Contains(children[name], spin.Process.Pid) {
		t.Errorf("children %v: want sleep %d and %s %d", children, idle.Process.Pid, name, spin.Process.Pid)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU(-1): no error")
	}
	if both := CPUOf(t, spin.Process.Pid, idle.Process.Pid); both < busy {
		t.Errorf("CPUOf spinner and sleep %v, less than the spinner's %v", both, busy)
	}
	byName := CPUByProcess(t, "self", "sleep", name, "absent")
	if _, ok := byName["absent"]; ok || byName["self"] <= 0 || byName[name] < spinCPU-2*clockTick {
		t.Errorf("CPUByProcess %v: want self > 0, %s >= %v, sleep present, absent left out", byName, name, spinCPU)
	}
	if _, ok := byName["sleep"]; !ok {
		t.Errorf("CPUByProcess %v: no sleep", byName)
	}
}

// spinHelper burns CPU (getrusage calls, user and system time both count)
// until getrusage reports spinCPU, says so, then blocks on its standard
// input.
func spinHelper() {
	var ru syscall.Rusage
	for {
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			fmt.Fprintln(os.Stderr, "getrusage:", err)
			os.Exit(1)
		}
		if time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= spinCPU {
			break
		}
	}
	fmt.Fprintln(os.Stdout, "spun")
	_, _ = io.ReadAll(os.Stdin) // blocks until the test kills us
}

// TestMemoryMatchesRusage: after this process touched 64 MiB, Memory's
// peak is at least that and is what its own getrusage says (ru_maxrss is
// VmHWM in KiB), and the resident set now is no more than the peak.
func TestMemoryMatchesRusage(t *testing.T) {
	const touched = 64 << 20
	buf := make([]byte, touched)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	rss, peak, err := Memory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	maxrss := uint64(ru.Maxrss) << 10
	if peak < touched || rss > peak || peak > maxrss+(4<<20) || maxrss > peak+(4<<20) {
		t.Errorf("Memory = rss %d, peak %d; getrusage says peak %d; touched %d", rss, peak, maxrss, touched)
	}
	if mb := PeakRSSMB(t, os.Getpid()); mb < touched>>20 {
		t.Errorf("PeakRSSMB = %.1f, want ≥ %d", mb, touched>>20)
	}
	if _, _, err := Memory(-1); err == nil {
		t.Error("Memory(-1): no error")
	}
	runtime.KeepAlive(buf) // touched pages stay resident until here
}
