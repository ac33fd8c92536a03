package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ambient-code/control-plane/libs/group"
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

// ConsumeWith runs consume with a rejoin backoff from min to max, telling
// waiting every wait chosen.
func ConsumeWith(ctx context.Context, js jetstream.JetStream, cfg group.Config, h group.Handler, log *slog.Logger, minWait, maxWait time.Duration, waiting func(err error, d time.Duration)) error {
	return consume(ctx, js, cfg, h, log, rejoinPolicy{min: minWait, max: maxWait, waiting: waiting})
}
