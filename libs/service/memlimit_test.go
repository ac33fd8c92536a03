package service_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/service"
)

// TestMemoryRatioVariable: AUTOMEMLIMIT is a ratio in (0, 1] or "off", 0.9
// when unset; anything else is a start-up error naming it.
func TestMemoryRatioVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value   string
		want    float64
		wantErr bool
	}{
		{"", service.DefaultMemoryRatio, false},
		{"off", 0, false},
		{"0.5", 0.5, false},
		{" 1 ", 1, false},
		{"0", 0, true},
		{"1.5", 0, true},
		{"-0.1", 0, true},
		{"NaN", 0, true},
		{"90%", 0, true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			t.Parallel()
			c, err := loadWithVariable(service.EnvAutoMemLimit, tc.value)
			switch {
			case tc.wantErr && !namesVariable(err, service.EnvAutoMemLimit):
				t.Fatalf("AUTOMEMLIMIT=%q: error %v, want one naming %s", tc.value, err, service.EnvAutoMemLimit)
			case !tc.wantErr && err != nil:
				t.Fatalf("AUTOMEMLIMIT=%q: %v", tc.value, err)
			case !tc.wantErr && c.MemoryLimitRatio != tc.want:
				t.Fatalf("AUTOMEMLIMIT=%q: ratio %v, want %v", tc.value, c.MemoryLimitRatio, tc.want)
			}
		})
	}
}

// TestMemoryLimitRefreshVariable: AUTOMEMLIMIT_REFRESH is a duration of
// at least 1s, a minute when unset, 0 to read the limit once; anything else is a start-up
// error naming it.
func TestMemoryLimitRefreshVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value   string
		want    time.Duration
		wantErr bool
	}{
		{"", time.Minute, false},
		{"0", 0, false},
		{"30s", 30 * time.Second, false},
		{"1s", time.Second, false},
		{"999ms", 0, true}, // a busy loop re-reading cgroup files
		{"1ns", 0, true},
		{"60", 0, true},
		{"-1s", 0, true},
		{"often", 0, true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			t.Parallel()
			c, err := loadWithVariable(service.EnvAutoMemLimitRefresh, tc.value)
			switch {
			case tc.wantErr && !namesVariable(err, service.EnvAutoMemLimitRefresh):
				t.Fatalf("%s=%q: error %v, want one naming it", service.EnvAutoMemLimitRefresh, tc.value, err)
			case !tc.wantErr && err != nil:
				t.Fatalf("%s=%q: %v", service.EnvAutoMemLimitRefresh, tc.value, err)
			case !tc.wantErr && c.MemoryLimitRefresh != tc.want:
				t.Fatalf("%s=%q: %v, want %v", service.EnvAutoMemLimitRefresh, tc.value, c.MemoryLimitRefresh, tc.want)
			}
		})
	}
}

// loadWithVariable loads the service configuration from an environment
// that sets only name, to value ("" leaves it unset).
func loadWithVariable(name, value string) (service.Config, error) {
	l := envconfig.New(func(n string) (string, bool) {
		if n == name && value != "" {
			return value, true
		}
		return "", false
	})
	c := service.LoadConfig(l, service.Config{})
	return c, l.Err()
}

// namesVariable reports whether err is a configuration error naming name.
func namesVariable(err error, name string) bool {
	var varErr *envconfig.VarError
	return errors.As(err, &varErr) && varErr.Name == name
}

// TestApplyMemoryLimit: the runtime's soft limit becomes the ratio of the
// container's limit, and stays as it is when the ratio is off, GOMEMLIMIT
// is set, or there is no limit to read. Not parallel: the limit is the
// process's.
func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	const container = 1000 << 20
	noEnv := func(string) string { return "" }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name     string
		ratio    float64
		provider memlimit.Provider
		getenv   func(string) string
		want     int64 // 0: the limit is left as it was
	}{
		{"container limit", 0.9, memlimit.Limit(container), noEnv, int64(0.9 * container)},
		{"whole limit", 1, memlimit.Limit(container), noEnv, container},
		{"off", 0, memlimit.Limit(container), noEnv, 0},
		{"GOMEMLIMIT set", 0.9, memlimit.Limit(container), func(name string) string {
			if name == service.EnvGoMemLimit {
				return "300MiB"
			}
			return ""
		}, 0},
		{"no limit", 0.9, func() (uint64, error) { return 0, memlimit.ErrNoLimit }, noEnv, 0},
		{"no cgroup", 0.9, func() (uint64, error) { return 0, errors.New("not a cgroup") }, noEnv, 0},
		{"beyond int64", 1, memlimit.Limit(math.MaxUint64), noEnv, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const unchanged = 12345 << 20
			debug.SetMemoryLimit(unchanged)
			got := service.NewMemoryLimit(tc.ratio, tc.provider, tc.getenv, log).Limit()
			now := debug.SetMemoryLimit(-1)
			want := tc.want
			if want == 0 {
				want = unchanged
			}
			if got != tc.want || now != want {
				t.Fatalf("returned %d, runtime limit %d; want %d and %d", got, now, tc.want, want)
			}
		})
	}
}

// TestMemoryLimitFollowsContainer: a refresh after the container's limit
// changed sets the new share; after the limit is gone it lifts the
// runtime's; an unreadable cgroup keeps the last. Not parallel: the limit
// is the process's.
func TestMemoryLimitFollowsContainer(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	var (
		container uint64 = 1000 << 20
		readErr   error
	)
	cgroup := func() (uint64, error) { return container, readErr }
	m := service.NewMemoryLimit(0.5, cgroup, func(string) string { return "" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	steps := []struct {
		name      string
		container uint64
		readErr   error
		want      int64 // the runtime's limit after the refresh
	}{
		{"grown", 2000 << 20, nil, 1000 << 20},
		{"shrunk", 500 << 20, nil, 250 << 20},
		{"unreadable", 100 << 20, errors.New("cgroup gone"), 250 << 20},
		{"removed", 0, memlimit.ErrNoLimit, math.MaxInt64},
		{"set again", 800 << 20, nil, 400 << 20},
	}
	if got := debug.SetMemoryLimit(-1); got != 500<<20 {
		t.Fatalf("runtime limit at start %d, want %d", got, 500<<20)
	}
	for _, s := range steps {
		container, readErr = s.container, s.readErr
		err := m.Refresh()
		if (err != nil) != (s.readErr != nil && !errors.Is(s.readErr, memlimit.ErrNoLimit)) {
			t.Fatalf("%s: refresh: %v", s.name, err)
		}
		if got := debug.SetMemoryLimit(-1); got != s.want {
			t.Fatalf("%s: runtime limit %d, want %d", s.name, got, s.want)
		}
	}
}

// TestMainSetsMemoryLimitFromCgroup runs service.Main in a child process
// inside a memory cgroup of its own with a 250 MiB limit: the child's Go
// runtime must run with 90 % of it as its soft limit, read from the
// kernel's cgroup files (v1 or v2). It needs a memory cgroup this process
// may create (root, a writable cgroup tree), as on CI's machines; elsewhere
// it skips.
func TestMainSetsMemoryLimitFromCgroup(t *testing.T) {
	t.Parallel()
	const limit = 250 << 20
	procs, _ := memoryCgroup(t, limit)
	cmd := exec.CommandContext(t.Context(), "/bin/sh", "-c", `echo $$ > "$1" && exec "$2" -test.run='^$'`, "sh", procs, os.Args[0])
	cmd.Env = append(os.Environ(), envHelper+"=1", envMode+"=memlimit", service.EnvLogLevel+"=debug")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v (stderr %q)", err, stderr.String())
	}
	got := strings.TrimSpace(string(out))
	if want := fmt.Sprintf("limit=%d", int64(0.9*limit)); got != want {
		t.Fatalf("child printed %q, want %q (stderr %q)", got, want, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"memory limit set from the container's"`) {
		t.Errorf("stderr %q lacks the memory limit's log line", stderr.String())
	}
}

// TestMainFollowsCgroupResize: the container's limit changes while the
// service runs (an in-place pod resize writes it into the running pod's
// cgroup) and the Go runtime's follows within AUTOMEMLIMIT_REFRESH. As
// TestMainSetsMemoryLimitFromCgroup, it skips without a cgroup to create.
func TestMainFollowsCgroupResize(t *testing.T) {
	t.Parallel()
	const before, after = 250 << 20, 400 << 20
	procs, limitFile := memoryCgroup(t, before)
	// A child that never sees the change is killed, which ends its output.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `echo $$ > "$1" && exec "$2" -test.run='^$'`, "sh", procs, os.Args[0])
	cmd.Env = append(os.Environ(), envHelper+"=1", envMode+"=memlimit-follow", service.EnvAutoMemLimitRefresh+"="+service.MinMemoryLimitRefresh.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("child ended early: %v (stderr %q)", lines.Err(), stderr.String())
		}
		return lines.Text()
	}
	if got, want := next(), fmt.Sprintf("limit=%d", int64(0.9*before)); got != want {
		t.Fatalf("child printed %q at start, want %q", got, want)
	}
	if err := os.WriteFile(limitFile, []byte(strconv.FormatInt(after, 10)), 0o644); err != nil {
		t.Fatalf("resize the cgroup: %v", err)
	}
	if got, want := next(), fmt.Sprintf("limit=%d", int64(0.9*after)); got != want {
		t.Fatalf("child printed %q after the resize, want %q", got, want)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v (stderr %q)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"msg":"memory limit changed with the container's"`) {
		t.Errorf("stderr %q lacks the change's log line", stderr.String())
	}
}

// memoryCgroup creates a memory cgroup below this process's own with the
// given limit, removed when the test ends, and returns its cgroup.procs
// file and the file of its limit. It skips the test when the cgroup tree
// does not allow it.
func memoryCgroup(t *testing.T, limit int64) (procs, limitFile string) {
	t.Helper()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	var dir string
	for line := range strings.Lines(string(self)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "memory"): // v1
			dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", parts[2]), "memory.limit_in_bytes"
		case parts[0] == "0" && parts[1] == "" && dir == "": // v2, unless v1 has the memory controller
			dir, limitFile = filepath.Join("/sys/fs/cgroup", parts[2]), "memory.max"
		}
	}
	if dir == "" {
		t.Skip("no memory cgroup")
	}
	child, err := os.MkdirTemp(dir, "svc-test-") // a name of its own: the tests run in parallel
	if err != nil {
		t.Skipf("cannot create a memory cgroup here: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(child); err != nil {
			t.Errorf("remove cgroup %s: %v", child, err)
		}
	})
	limitFile = filepath.Join(child, limitFile)
	if err := os.WriteFile(limitFile, []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Skipf("cannot limit a memory cgroup here: %v", err)
	}
	return filepath.Join(child, "cgroup.procs"), limitFile
}
