package testenv

import (
	"bytes"
	"sync"
)

// Buffer collects what a component writes (a test's slog handler, a
// child's output) while the test reads it: a bytes.Buffer safe for
// concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
