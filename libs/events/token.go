package events

import (
	"crypto/sha256"
	"encoding/hex"
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

// MaxTokenLen is the longest project or object token Subject writes. The
// API bounds neither a session's nor a project setting's project_id, and
// EscapeToken makes every byte outside [A-Za-z0-9-] three: unbounded, ~460
// CJK characters pushed a PUB line past nats-server's max_control_line
// (4096 bytes), the server closed the publisher's connection for good, and
// a restarted informer published the same object again (a poison pill for
// every tenant). An id whose escaped form is longer becomes a digest token.
const MaxTokenLen = 128

// MaxSubjectLen is the longest subject a service sends: a message with a
// longer one is refused before it reaches the connection. It leaves room
// under nats-server's max_control_line (4096 bytes by default), which
// counts the whole PUB line (verb, subject, reply inbox, sizes), while no
// subject of the layout with a sane prefix comes near it
// (<prefix>.project_settings.<128>.<128>).
const MaxSubjectLen = 1024

// digestIntro starts a digest token. EscapeToken never writes it: each '_'
// it writes ends the token ("_" for the empty string) or is followed by two
// upper-case hex digits, and 'L' is none; so a digest token is never an
// escaped id, and UnescapeToken rejects it (bad escape).
const digestIntro = "_L"

// digestHexLen is how many lower-case hex digits of SHA-256 a digest token
// carries: 128 bits, collision-free for any number of ids an API holds.
const digestHexLen = 32

// SubjectToken returns the token Subject writes for s: EscapeToken(s) when
// that is at most MaxTokenLen bytes, otherwise the digest token
// "_L" + the first 32 lower-case hex digits of SHA-256(s) (34 bytes). It
// is deterministic, so every event of an object keeps one subject (order,
// fencing and partitioning per subject work as for short ids), and never
// equal to an escaped token (see digestIntro). A digest token cannot be
// reversed: read the id from the event (ResourceEvent.project_id).
func SubjectToken(s string) string {
	// An escape is never shorter than its input: no need to build it.
	if len(s) <= MaxTokenLen {
		if tok := EscapeToken(s); len(tok) <= MaxTokenLen {
			return tok
		}
	}
	return digestToken(s)
}

// BoundToken returns tok, a token as EscapeToken writes it, when it is at
// most MaxTokenLen bytes; otherwise the digest token SubjectToken gives
// what tok stands for (tok itself when it does not unescape). It bounds
// the tokens of subjects made before they were bounded (see libs/group
// DLQSubject).
func BoundToken(tok string) string {
	if len(tok) <= MaxTokenLen {
		return tok
	}
	if s, err := UnescapeToken(tok); err == nil {
		return digestToken(s)
	}
	return digestToken(tok)
}

// IsDigestToken reports whether tok is a digest token (SubjectToken).
func IsDigestToken(tok string) bool {
	if len(tok) != len(digestIntro)+digestHexLen || !strings.HasPrefix(tok, digestIntro) {
		return false
	}
	for i := len(digestIntro); i < len(tok); i++ {
		if c := tok[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func digestToken(s string) string {
	sum := sha256.Sum256([]byte(s))
	return digestIntro + hex.EncodeToString(sum[:digestHexLen/2])
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
