package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// Memory limit variables. GOMEMLIMIT is the Go runtime's own (read by the
// runtime before main); AUTOMEMLIMIT carries the name and meaning it has in
// github.com/KimMachineGun/automemlimit, whose cgroup reader sets the limit;
// AUTOMEMLIMIT_REFRESH is ours.
const (
	EnvGoMemLimit             = "GOMEMLIMIT"
	EnvAutoMemLimit           = "AUTOMEMLIMIT"
	EnvAutoMemLimitRefresh    = "AUTOMEMLIMIT_REFRESH"
	DefaultMemoryRatio        = 0.9
	DefaultMemoryLimitRefresh = time.Minute
	// MinMemoryLimitRefresh is the shortest AUTOMEMLIMIT_REFRESH but 0.
	MinMemoryLimitRefresh = time.Second
	memoryRatioDisabled   = "off"
)

// loadMemoryRatio reads AUTOMEMLIMIT: "off" (0) or the share, in (0, 1], of
// the container's memory limit the Go runtime keeps its memory under.
func loadMemoryRatio(l *envconfig.Loader) float64 {
	v := strings.TrimSpace(l.String(EnvAutoMemLimit, ""))
	switch v {
	case "":
		return DefaultMemoryRatio
	case memoryRatioDisabled:
		return 0
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(r) || r <= 0 || r > 1 {
		l.Invalid(EnvAutoMemLimit, `"off" or a ratio in (0, 1], e.g. 0.9`, v, err)
		return 0
	}
	return r
}

// memoryLimit keeps the Go runtime's soft memory limit at ratio times the
// memory limit of the process's cgroup. Without it the heap of a service
// in a container with a memory limit grows to twice its live size before
// the collector runs (GOGC=100), and a burst (an informer's first list of
// 100,000 sessions, a resync) crosses the container's limit: the kernel
// kills the process, where the collector could have run harder. The limit
// is soft: a live heap larger than it is kept, and the runtime limits the
// collector's CPU.
//
// The container's limit can change while the process runs (Kubernetes'
// in-place pod resize writes the new limit into the running pod's cgroup),
// so follow re-reads it.
type memoryLimit struct {
	ratio  float64
	cgroup memlimit.Provider
	log    *slog.Logger
	set    int64 // the runtime limit this set last; 0: none
}

// newMemoryLimit sets the runtime's limit from the cgroup's and returns
// what keeps following it, or nil when there is nothing to follow: ratio 0
// (AUTOMEMLIMIT=off), GOMEMLIMIT set (the runtime applied it already), or
// no cgroup to read a limit from (a developer's machine). None of these is
// an error for a service. A cgroup without a limit is followed: a resize
// may give it one.
func newMemoryLimit(ratio float64, cgroup memlimit.Provider, getenv func(string) string, log *slog.Logger) *memoryLimit {
	if ratio == 0 {
		log.Debug("memory limit not set", slog.String("reason", EnvAutoMemLimit+"="+memoryRatioDisabled))
		return nil
	}
	if v := getenv(EnvGoMemLimit); v != "" {
		log.Debug("memory limit set by "+EnvGoMemLimit, slog.String("value", v))
		return nil
	}
	m := &memoryLimit{ratio: ratio, cgroup: cgroup, log: log}
	if err := m.refresh(); err != nil {
		log.Debug("memory limit not set: no cgroup memory limit to read", slog.Any("error", err))
		return nil
	}
	if m.set == 0 {
		log.Debug("memory limit not set: the container has none")
	}
	return m
}

// refresh reads the cgroup's limit and, when the share of it differs from
// the runtime limit last set, sets the new one (or lifts it: the container
// has none any more).
func (m *memoryLimit) refresh() error {
	bytes, err := memlimit.ApplyRatio(m.cgroup, m.ratio)()
	var want int64
	switch {
	case errors.Is(err, memlimit.ErrNoLimit):
	case err != nil:
		return fmt.Errorf("read the cgroup's memory limit: %w", err)
	case bytes == 0 || bytes > math.MaxInt64:
		m.log.Debug("memory limit not set", slog.String("reason", fmt.Sprintf("cgroup limit out of range: %d bytes", bytes)))
	default:
		want = int64(bytes)
	}
	if want == m.set {
		return nil
	}
	switch {
	case want == 0:
		debug.SetMemoryLimit(math.MaxInt64)
		m.log.Info("memory limit lifted: the container has none any more", slog.Int64("previous_bytes", m.set))
	case m.set == 0:
		debug.SetMemoryLimit(want)
		m.log.Info("memory limit set from the container's", slog.Int64("bytes", want), slog.Float64("ratio", m.ratio))
	default:
		debug.SetMemoryLimit(want)
		m.log.Info("memory limit changed with the container's",
			slog.Int64("bytes", want), slog.Int64("previous_bytes", m.set), slog.Float64("ratio", m.ratio))
	}
	m.set = want
	return nil
}

// follow refreshes the limit every interval until ctx ends. A cgroup that
// cannot be read any more keeps the last limit.
func (m *memoryLimit) follow(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.refresh(); err != nil {
				m.log.Debug("memory limit kept", slog.Any("error", err))
			}
		}
	}
}

// limit returns the runtime limit last set (0: none).
func (m *memoryLimit) limit() int64 {
	if m == nil {
		return 0
	}
	return m.set
}
