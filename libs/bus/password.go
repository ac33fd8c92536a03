package bus

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"unicode"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/logkey"
)

// passwordFile reads a NATS password from a file on every (re)connect. Its
// read method is safe for concurrent use (nats.go calls it from its connect
// and reconnect goroutines).
type passwordFile struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
	last string // guarded by mu: the last password read successfully
}

// newPasswordFile reads path once, so a missing or empty file is a
// configuration error at start-up rather than an endless reconnect loop.
func newPasswordFile(path string, log *slog.Logger) (*passwordFile, error) {
	pw, err := readPassword(path)
	if err != nil {
		return nil, fmt.Errorf("nats password file: %w: %w", ErrInvalidConfig, err)
	}
	return &passwordFile{path: path, log: log, last: pw}, nil
}

// read returns the file's current password, or the last good one when the
// file cannot be read now (a Secret volume is swapped atomically, but a
// hand-edited file may be caught half-written or empty).
func (p *passwordFile) read() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	pw, err := readPassword(p.path)
	if err != nil {
		p.log.Warn("nats password file unreadable, using the last password read", slog.Any(logkey.Err, err))
		return p.last
	}
	p.last = pw
	return pw
}

// readPassword returns the file's content without surrounding white space
// (kubectl create secret --from-file and editors add a final newline).
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", fmt.Errorf("%s is empty", path)
	}
	return string(b), nil
}

// checkPasswordFile reports what makes the password file at path unusable:
// unreadable, empty, or a control character (a line break) inside the
// password, which no NATS server's configuration can hold. The error never
// holds the password.
func checkPasswordFile(path string) error {
	pw, err := readPassword(path)
	if err != nil {
		return err
	}
	if strings.ContainsFunc(pw, unicode.IsControl) {
		return fmt.Errorf("%s: the password holds a control character", path)
	}
	return nil
}

// RedactedURL is URL fit for logs and errors (envconfig.RedactURLs): in
// each comma-separated URL a password becomes "xxxxx", and so does a user
// without a password, which nats.go sends as a token.
func (c ConnectConfig) RedactedURL() string { return envconfig.RedactURLs(c.URL) }
