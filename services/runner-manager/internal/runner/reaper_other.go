//go:build !linux

package runner

import (
	"context"
	"log/slog"
)

// Reaper is a no-op outside Linux, which has no child subreapers.
type Reaper struct{}

// NewReaper returns a reaper that does nothing.
func NewReaper(*slog.Logger) (*Reaper, error) { return &Reaper{}, nil }

func (r *Reaper) spawn(start func() (int, error)) error { _, err := start(); return err }
func (r *Reaper) untrack(int)                           {}

// Run returns when ctx ends.
func (r *Reaper) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// Reap reaps nothing.
func (r *Reaper) Reap() int { return 0 }

// KillSession kills nothing.
func (r *Reaper) KillSession(string) int { return 0 }

// KillDescendants kills nothing.
func (r *Reaper) KillDescendants() int { return 0 }
