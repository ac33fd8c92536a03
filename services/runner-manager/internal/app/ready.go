package app

import (
	"context"
	"errors"
	"sync/atomic"
)

// readyFlag is a readiness check that passes once set.
type readyFlag struct{ ok atomic.Bool }

func (f *readyFlag) set() { f.ok.Store(true) }

func (f *readyFlag) check(context.Context) error {
	if !f.ok.Load() {
		return errors.New("not joined yet")
	}
	return nil
}
