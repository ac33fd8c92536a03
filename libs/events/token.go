package events

import (
	"fmt"
	"strings"
)

// escapeByte is the escape introducer. It is valid in NATS subjects and in KV
// keys, and it doubles as the placeholder for an empty token: an escaped
// non-empty string never is a lone "_" because every "_" it contains is
// followed by two hex digits.
const escapeByte = '_'

const hexDigits = "0123456789ABCDEF"

// tokenSafe reports whether b may appear unescaped. Only this small set is
// allowed so the result is valid both as a subject token and as a KV key.
func tokenSafe(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-'
}

// EscapeToken turns any string into a single subject token (and KV key
// segment): bytes outside [A-Za-z0-9-] become "_XX" (upper-case hex), and the
// empty string becomes "_". UnescapeToken reverses it exactly. It is safe for
// concurrent use.
func EscapeToken(s string) string {
	if s == "" {
		return string(escapeByte)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !tokenSafe(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte(escapeByte)
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0f])
	}
	return b.String()
}

// UnescapeToken reverses EscapeToken. It returns ErrBadToken for a token that
// EscapeToken cannot produce (bad escapes, lower-case hex, bytes that should
// have been escaped), so every accepted token has exactly one source string.
func UnescapeToken(tok string) (string, error) {
	if tok == string(escapeByte) {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("empty token: %w", ErrBadToken)
	}
	if strings.IndexByte(tok, escapeByte) < 0 {
		for i := 0; i < len(tok); i++ {
			if !tokenSafe(tok[i]) {
				return "", fmt.Errorf("token %q has unescaped byte %q: %w", tok, tok[i], ErrBadToken)
			}
		}
		return tok, nil
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case tokenSafe(c):
			out = append(out, c)
		case c == escapeByte:
			if i+2 >= len(tok) {
				return "", fmt.Errorf("token %q: truncated escape: %w", tok, ErrBadToken)
			}
			hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("token %q: bad escape: %w", tok, ErrBadToken)
			}
			v := byte(hi<<4 | lo)
			if tokenSafe(v) {
				// A safe byte is never escaped; accepting it would give two
				// spellings of one id.
				return "", fmt.Errorf("token %q: needless escape: %w", tok, ErrBadToken)
			}
			out = append(out, v)
			i += 2
		default:
			return "", fmt.Errorf("token %q has unescaped byte %q: %w", tok, c, ErrBadToken)
		}
	}
	return string(out), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
