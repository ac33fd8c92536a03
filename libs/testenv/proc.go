package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// every Linux this project runs on).
const clockTick = 10 * time.Millisecond

// ProcessCPU returns the user and system CPU time process pid has used so
// far (utime+stime of /proc/<pid>/stat, what its rusage says, threads that
// ended included), in 10 ms ticks: benchmarks divide the difference over a
// run by the events of the run to report a process's CPU per event.
func ProcessCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	_, f, err := statFields(raw)
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	var total time.Duration
	for _, i := range []int{statUtime, statStime} {
		ticks, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu of %d: field %d: %w", pid, i, err)
		}
		total += time.Duration(ticks) * clockTick
	}
	return total, nil
}

// ChildPIDs returns the processes whose parent is ppid, by command name
// (/proc/<pid>/stat's comm, at most 15 characters).
func ChildPIDs(ppid int) (map[string][]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := map[string][]int{}
	for _, path := range stats {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue // ended meanwhile
		}
		name, f, err := statFields(raw)
		if err != nil {
			continue
		}
		if parent, err := strconv.Atoi(f[statPPID]); err != nil || parent != ppid {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err != nil {
			continue
		}
		out[name] = append(out[name], pid)
	}
	return out, nil
}

// Indexes into statFields' result (proc(5) numbers the fields from 1 with
// pid and comm first: ppid is field 4, utime 14, stime 15).
const (
	statPPID  = 4 - 3
	statUtime = 14 - 3
	statStime = 15 - 3
)

// statFields returns the command name of a /proc/<pid>/stat line, which is
// in parentheses and may hold spaces and parentheses, and the fields after
// it: the state (field 3) first.
func statFields(raw []byte) (comm string, fields []string, err error) {
	start, end := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if start < 0 || end < start {
		return "", nil, fmt.Errorf("no command name in %q", raw)
	}
	f := strings.Fields(string(raw[end+1:]))
	if len(f) <= statStime {
		return "", nil, fmt.Errorf("%d fields after the command name, want > %d", len(f), statStime)
	}
	return string(raw[start+1 : end]), f, nil
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
