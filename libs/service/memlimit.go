package service

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// Memory limit variables. GOMEMLIMIT is the Go runtime's own (read by the
// runtime before main); AUTOMEMLIMIT carries the name and meaning it has in
// github.com/KimMachineGun/automemlimit, whose cgroup reader sets the limit.
const (
	EnvGoMemLimit       = "GOMEMLIMIT"
	EnvAutoMemLimit     = "AUTOMEMLIMIT"
	DefaultMemoryRatio  = 0.9
	memoryRatioDisabled = "off"
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

// applyMemoryLimit sets the Go runtime's soft memory limit to ratio times
// the memory limit of the process's cgroup (read by limit), and returns the
// limit set (0: none). Without it the heap of a service in a container with
// a memory limit grows to twice its live size before the collector runs
// (GOGC=100), and a burst (an informer's first list of 100,000 sessions, a
// resync) crosses the container's limit: the kernel kills the process,
// where the collector could have run harder. The limit is soft: a live heap
// larger than it is kept, and the runtime limits the collector's CPU.
//
// It changes nothing when ratio is 0 (AUTOMEMLIMIT=off), when GOMEMLIMIT is
// set (the runtime applied it already), or when the process has no memory
// limit or no cgroup to read one from (a developer's machine): none of
// these is an error for a service.
func applyMemoryLimit(ratio float64, limit memlimit.Provider, getenv func(string) string, log *slog.Logger) int64 {
	if ratio == 0 {
		log.Debug("memory limit not set", slog.String("reason", EnvAutoMemLimit+"="+memoryRatioDisabled))
		return 0
	}
	if v := getenv(EnvGoMemLimit); v != "" {
		log.Debug("memory limit set by "+EnvGoMemLimit, slog.String("value", v))
		return 0
	}
	bytes, err := memlimit.ApplyRatio(limit, ratio)()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit):
		log.Debug("memory limit not set: the container has none")
		return 0
	case err != nil:
		log.Debug("memory limit not set: no cgroup memory limit to read", slog.Any("error", err))
		return 0
	case bytes == 0 || bytes > math.MaxInt64:
		log.Debug("memory limit not set", slog.String("reason", fmt.Sprintf("cgroup limit out of range: %d bytes", bytes)))
		return 0
	}
	debug.SetMemoryLimit(int64(bytes))
	log.Info("memory limit set from the container's",
		slog.Int64("bytes", int64(bytes)), slog.Float64("ratio", ratio))
	return int64(bytes)
}
