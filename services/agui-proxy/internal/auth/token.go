package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// MinTokenLen is the shortest static token accepted: shorter ones are
// guessable.
const MinTokenLen = 16

// Tokens verifies static bearer tokens. Safe for concurrent use.
type Tokens struct {
	// SHA-256 of each token: hashing gives every comparison the same length,
	// so subtle.ConstantTimeCompare leaks neither content nor length.
	hashes [][sha256.Size]byte
}

var _ Verifier = (*Tokens)(nil)

// LoadTokens reads a token file (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open tokens file: %w", err)
	}
	defer func() {
		// Read-only file; a close error loses nothing.
		_ = f.Close()
	}()
	t, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens reads one token per line; blank lines and lines starting with
// '#' are skipped. It fails on a token shorter than MinTokenLen or containing
// white space, and when there is no token at all.
func ParseTokens(r io.Reader) (*Tokens, error) {
	var t Tokens
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		tok := strings.TrimSpace(sc.Text())
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if len(tok) < MinTokenLen || strings.ContainsAny(tok, " \t") {
			return nil, fmt.Errorf("line %d: token must be at least %d characters without white space", line, MinTokenLen)
		}
		t.hashes = append(t.hashes, sha256.Sum256([]byte(tok)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	if len(t.hashes) == 0 {
		return nil, fmt.Errorf("no tokens")
	}
	return &t, nil
}

// Len returns the number of tokens.
func (t *Tokens) Len() int { return len(t.hashes) }

// Verify accepts a request whose bearer token is one of the tokens. Every
// token is compared, so the time taken does not depend on which one matched.
func (t *Tokens) Verify(_ context.Context, r *http.Request) (Principal, error) {
	tok, ok := Bearer(r)
	if !ok {
		return Principal{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	h := sha256.Sum256([]byte(tok))
	match := -1
	for i := range t.hashes {
		if subtle.ConstantTimeCompare(h[:], t.hashes[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	return Principal{Name: fmt.Sprintf("token#%d", match+1)}, nil
}
