package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// ProcessCPU returns the user and system CPU time process pid has used so
// far (utime+stime of /proc/<pid>/stat, what its rusage says, threads that
// ended included), in 10 ms ticks: benchmarks divide the difference over a
// run by the events of the run to report a process's CPU per event.
func ProcessCPU(pid int) (time.Duration, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	return time.Duration(st.UTime+st.STime) * clockTick, nil
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ: 100 on
// every Linux this project runs on, and what procfs's CPUTime assumes).
const clockTick = 10 * time.Millisecond

// ChildPIDs returns the processes whose parent is ppid, by command name
// (/proc/<pid>/stat's comm, at most 15 characters).
func ChildPIDs(ppid int) (map[string][]int, error) {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := map[string][]int{}
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || st.PPID != ppid {
			continue // ended meanwhile, or not a child
		}
		out[st.Comm] = append(out[st.Comm], st.PID)
	}
	return out, nil
}

// CPUOf returns the CPU time the processes pids have used so far, summed
// (ProcessCPU); it fails t when one cannot be read.
func CPUOf(t testing.TB, pids ...int) time.Duration {
	t.Helper()
	var total time.Duration
	for _, pid := range pids {
		cpu, err := ProcessCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		total += cpu
	}
	return total
}

// CPUByProcess returns the CPU time used so far by this process, under
// self, and by each of its children named in children (skipped when there
// is not exactly one of that name), under its name: a benchmark samples it
// before and after a run to report each process's CPU per event. It fails
// t when /proc cannot be read.
func CPUByProcess(t testing.TB, self string, children ...string) map[string]time.Duration {
	t.Helper()
	kids, err := ChildPIDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{self: os.Getpid()}
	for _, name := range children {
		if p := kids[name]; len(p) == 1 {
			pids[name] = p[0]
		}
	}
	out := make(map[string]time.Duration, len(pids))
	for name, pid := range pids {
		out[name] = CPUOf(t, pid)
	}
	return out
}

// Memory returns the resident set of process pid now and its peak (VmRSS
// and VmHWM of /proc/<pid>/status), in bytes.
func Memory(pid int) (rss, peak uint64, err error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("memory of %d: %w", pid, err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, 0, fmt.Errorf("memory of %d: %w", pid, err)
	}
	return st.VmRSS, st.VmHWM, nil
}

// PeakRSSMB returns the peak resident set of process pid in MiB (Memory);
// it fails t when it cannot be read.
func PeakRSSMB(t testing.TB, pid int) float64 {
	t.Helper()
	_, peak, err := Memory(pid)
	if err != nil {
		t.Fatal(err)
	}
	return float64(peak) / (1 << 20)
}

// LoadAverage returns the machine's 1-minute load average (/proc/loadavg):
// benchmarks print it, since their figures move with it. It fails t when
// it cannot be read.
func LoadAverage(t testing.TB) float64 {
	t.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	l, err := fs.LoadAvg()
	if err != nil {
		t.Fatal(err)
	}
	return l.Load1
}

// PIDFile waits up to timeout until a process has written a pid to path
// (a shell's `echo $! > path`) and returns it.
func PIDFile(t testing.TB, path string, timeout time.Duration) int {
	t.Helper()
	var pid int
	Eventually(t, timeout, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	return pid
}
