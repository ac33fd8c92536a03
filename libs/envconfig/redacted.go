package envconfig

import (
	"fmt"
	"io"
	"log/slog"
)

// redactedText replaces a secret in every printed form.
const redactedText = "[REDACTED]"

// Redacted holds a secret (token, password). Its String, Format (every fmt
// verb, including %d and %#v), LogValue and text/JSON encoding hide the value, so printing a Config or logging
// it with slog cannot leak it; call [Redacted.Reveal] where the secret is
// actually used. An empty Redacted prints as "" so "not set" stays visible.
type Redacted string

// Reveal returns the secret itself.
func (r Redacted) Reveal() string { return string(r) }

// String implements fmt.Stringer with the value hidden.
func (r Redacted) String() string {
	if r == "" {
		return ""
	}
	return redactedText
}

// Format implements fmt.Formatter so that no verb prints the value: without
// it, a verb that is invalid for strings (such as %d) would print the raw
// string in its error text.
func (r Redacted) Format(f fmt.State, verb rune) {
	s := r.String()
	if verb == 'q' || (verb == 'v' && f.Flag('#')) {
		s = fmt.Sprintf("%q", s)
	}
	// fmt.State's Write error has nowhere to go: fmt itself ignores it.
	_, _ = io.WriteString(f, s)
}

// LogValue implements slog.LogValuer with the value hidden.
func (r Redacted) LogValue() slog.Value { return slog.StringValue(r.String()) }

// MarshalText implements encoding.TextMarshaler (and so JSON) with the value
// hidden.
func (r Redacted) MarshalText() ([]byte, error) { return []byte(r.String()), nil }
