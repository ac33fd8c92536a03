package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/ambient-code/control-plane/libs/logkey"
)

// TokenFile is a Verifier over a tokens file that can be reloaded while the
// proxy runs (a Kubernetes Secret volume is updated in place on rotation).
// A file that becomes unreadable or invalid keeps the last good tokens.
// Safe for concurrent use.
type TokenFile struct {
	path    string
	log     *slog.Logger
	current atomic.Pointer[Tokens]
	sum     [sha256.Size]byte // of the loaded file; touched only by Reload's caller (Run)
}

var _ Verifier = (*TokenFile)(nil)

// NewTokenFile loads path (see ParseTokens); it fails when the file cannot
// be read or holds no valid tokens.
func NewTokenFile(path string, log *slog.Logger) (*TokenFile, error) {
	f := &TokenFile{path: path, log: log}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Len returns the number of tokens in force.
func (f *TokenFile) Len() int { return f.current.Load().Len() }

// Verify checks the request against the tokens in force.
func (f *TokenFile) Verify(ctx context.Context, r *http.Request) (Principal, error) {
	return f.current.Load().Verify(ctx, r)
}

// Reload reads the file again and swaps the tokens in when the content
// changed and is valid. It reports whether the tokens changed. Reload must
// not be called concurrently with itself.
func (f *TokenFile) Reload() (bool, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return false, fmt.Errorf("read tokens file: %w", err)
	}
	sum := sha256.Sum256(b)
	if f.current.Load() != nil && sum == f.sum {
		return false, nil
	}
	t, err := ParseTokens(bytes.NewReader(b))
	if err != nil {
		return false, fmt.Errorf("tokens file %s: %w", f.path, err)
	}
	f.current.Store(t)
	f.sum = sum
	return true, nil
}

// Run reloads the file every interval until ctx ends, logging changes and
// keeping the last good tokens on errors. It returns nil.
func (f *TokenFile) Run(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			changed, err := f.Reload()
			switch {
			case err != nil:
				f.log.Warn("tokens file reload failed, keeping the current tokens", slog.Any(logkey.Err, err))
			case changed:
				f.log.Info("tokens file reloaded", slog.Int(logkey.Count, f.Len()))
			}
		}
	}
}
