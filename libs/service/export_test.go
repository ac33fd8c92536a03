package service

import (
	"log/slog"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// MemoryLimit exposes memoryLimit to the package's external tests.
type MemoryLimit = memoryLimit

// NewMemoryLimit exposes newMemoryLimit.
func NewMemoryLimit(ratio float64, cgroup memlimit.Provider, getenv func(string) string, log *slog.Logger) *MemoryLimit {
	return newMemoryLimit(ratio, cgroup, getenv, log)
}

// Refresh exposes refresh.
func (m *MemoryLimit) Refresh() error { return m.refresh() }

// Limit exposes limit.
func (m *MemoryLimit) Limit() int64 { return m.limit() }
