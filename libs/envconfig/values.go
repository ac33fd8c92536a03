package envconfig

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Expected forms, used in error messages and docs.
const (
	wantBool     = `true or false`
	wantDuration = `a non-negative Go duration such as "30s" or "1m30s"`
	wantHostPort = `"HOST:PORT" with 0 <= PORT <= 65535`
	wantDialAddr = `"HOST:PORT" with a host and 1 <= PORT <= 65535`
	wantFile     = `a path to an existing regular file`
	wantValue    = `a non-empty value`
)

// String returns the variable's value verbatim, or def when it is unset or
// empty.
func (l *Loader) String(name, def string) string {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	return v
}

// Required returns the variable's value verbatim; when it is unset or empty it
// records a [*VarError] wrapping [ErrMissing] and returns "".
func (l *Loader) Required(name string) string {
	v, ok := l.raw(name)
	if !ok {
		l.missing(name, wantValue)
		return ""
	}
	return v
}

// FileSuffix names a secret's file variant: a secret NAME can instead be
// given as NAME_FILE, the path of a file holding it (a mounted Kubernetes
// Secret, a Docker secret). The file variant keeps the secret out of the
// process environment, where /proc/<pid>/environ shows it for the life of
// the process.
const FileSuffix = "_FILE"

// secret reads a secret from name or from the file name+FileSuffix
// names; found is false when neither is set (or the value is unusable,
// which is recorded). Trailing line breaks are dropped: files written by
// hand or by kubectl end with one, and so does a variable filled from such
// a file (a Kubernetes secretKeyRef); secrets never do. What remains must
// be printable: a token with a line break or only white space in it could
// never authenticate, and would fail every call instead of the start.
func (l *Loader) secret(name string) (v Redacted, found bool) {
	raw, ok := l.raw(name)
	path, pathSet := l.raw(name + FileSuffix)
	switch {
	case ok && pathSet:
		l.invalid(name+FileSuffix, "unset when "+name+" is set (one of the two)", strings.TrimSpace(path), nil)
		return "", false
	case pathSet:
		return l.secretFile(name+FileSuffix, strings.TrimSpace(path))
	case !ok:
		return "", false
	}
	return l.checkSecret(name, strings.TrimRight(raw, "\r\n"), "")
}

// secretFile reads the secret in the file at path (the value of the
// variable fileVar).
func (l *Loader) secretFile(fileVar, path string) (Redacted, bool) {
	if path == "" {
		l.invalid(fileVar, "a path to a file holding the secret", "only white space", nil)
		return "", false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		l.invalid(fileVar, wantFile+" holding the secret", path, err)
		return "", false
	}
	return l.checkSecret(fileVar, strings.TrimRight(string(b), "\r\n"), path)
}

// checkSecret records v, read from variable name (or the file at path), as
// invalid when it is empty, white space only, or holds a control
// character; the error never shows the secret.
func (l *Loader) checkSecret(name, v, path string) (Redacted, bool) {
	where := "the value"
	if path != "" {
		where = path
	}
	if want, shown := secretProblem(v); want != "" {
		l.invalid(name, want, where+shown, nil)
		return "", false
	}
	return Redacted(v), true
}

// secretProblem returns what a secret should be when v (trailing line
// breaks already dropped) is unusable, and what to show of v in place of
// the secret; want is "" when v is usable.
func secretProblem(v string) (want, shown string) {
	switch {
	case strings.TrimSpace(v) == "":
		return "a secret, not empty or only white space", " (empty)"
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return "a secret without control characters (a line break or tab inside?)", " (not shown)"
	}
	return "", ""
}

// SecretPath returns the path in NAME_FILE (see [FileSuffix]) when the
// secret name is given as a file, else "". The secret itself is read and
// checked by [Loader.Secret] or [Loader.RequiredSecret], which record what
// is wrong with it; a caller that holds the secret for the life of the
// process uses the path to follow the file when it is replaced (a rotated
// Kubernetes Secret), with [NewSecretFile].
func (l *Loader) SecretPath(name string) string {
	path, _ := l.trimmed(name + FileSuffix) // unset gives ""
	return path
}

// Secret returns the variable's value as a [Redacted], or "" when unset. Use
// it for tokens and passwords so they never reach logs. The value may come
// from a file instead (NAME_FILE, see [FileSuffix]); setting both records a
// [*VarError], as does a file that cannot be read or is empty.
func (l *Loader) Secret(name string) Redacted {
	v, _ := l.secret(name) // unset is fine: an empty Redacted means "no secret"
	return v
}

// RequiredSecret is [Loader.Secret] for a secret that must be set (as NAME
// or NAME_FILE); a missing value records a [*VarError] wrapping
// [ErrMissing].
func (l *Loader) RequiredSecret(name string) Redacted {
	v, ok := l.secret(name)
	if !ok {
		// Missing only when neither is set: a value or file that is set
		// but unusable has its own error already, and "got nothing"
		// beside it would be wrong.
		_, set := l.raw(name)
		_, fileSet := l.raw(name + FileSuffix)
		if !set && !fileSet {
			l.missing(name, wantValue+" (or "+name+FileSuffix+")")
		}
		return ""
	}
	return v
}

// Bool parses the variable with [strconv.ParseBool] (1, t, true, 0, f,
// false, in any case), or returns def when it is unset.
func (l *Loader) Bool(name string, def bool) bool {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.invalid(name, wantBool, v, nil)
		return def
	}
	return b
}

// Int parses a base-10 integer in [minimum, maximum], or returns def when the
// variable is unset.
func (l *Loader) Int(name string, def, minimum, maximum int) int {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < minimum || n > maximum {
		l.invalid(name, fmt.Sprintf("an integer with %d <= N <= %d", minimum, maximum), v, nil)
		return def
	}
	return n
}

// Duration parses a non-negative Go duration ("500ms", "1m30s"), or returns
// def when the variable is unset. A bare number other than "0" is rejected
// because its unit would be a guess.
func (l *Loader) Duration(name string, def time.Duration) time.Duration {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	d, err := ParseDuration(v)
	if err != nil {
		l.invalid(name, wantDuration, v, nil)
		return def
	}
	return d
}

// URL parses an absolute URL with a host, or def when the variable is unset
// (an empty def gives nil). When schemes are given, the URL's scheme must be
// one of them. A bad def is reported like a bad value.
func (l *Loader) URL(name, def string, schemes ...string) *url.URL {
	v, ok := l.trimmed(name)
	if !ok {
		if def == "" {
			return nil
		}
		v = def
	}
	want := "an absolute URL such as \"scheme://host:port\""
	if len(schemes) > 0 {
		want = fmt.Sprintf("an absolute URL with scheme %s", strings.Join(schemes, "|"))
	}
	u, ok := absoluteURL(v, schemes)
	if !ok {
		l.invalid(name, want, RedactURLs(v), nil)
		return nil
	}
	return u
}

// absoluteURL parses raw as an absolute URL with a host whose scheme, when
// schemes are given, is one of them.
func absoluteURL(raw string, schemes []string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Hostname() == "" || (len(schemes) > 0 && !slices.Contains(schemes, u.Scheme)) {
		return nil, false
	}
	// url.Parse takes any digits as the port: "nats://a:99999" could
	// never be dialled.
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return nil, false
		}
	}
	return u, true
}

// URLList checks comma-separated absolute URLs with a host (a NATS server
// list: "nats://a:4222,nats://b:4222") and returns the value as it is, or def
// when the variable is unset. When schemes are given, every URL's scheme
// must be one of them.
func (l *Loader) URLList(name, def string, schemes ...string) string {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	want := "comma-separated absolute URLs"
	if len(schemes) > 0 {
		want = fmt.Sprintf("comma-separated URLs with scheme %s", strings.Join(schemes, "|"))
	}
	for item := range strings.SplitSeq(v, ",") {
		if _, ok := absoluteURL(strings.TrimSpace(item), schemes); !ok {
			l.invalid(name, want, RedactURLs(v), nil)
			return def
		}
	}
	return v
}

// HostPort parses "HOST:PORT" (HOST may be empty, as in ":8080"; IPv6 hosts
// use brackets), or returns def when the variable is unset.
func (l *Loader) HostPort(name, def string) string {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	if _, _, err := ParseHostPort(v); err != nil {
		l.invalid(name, wantHostPort, v, nil)
		return def
	}
	return v
}

// DialAddr is [Loader.HostPort] for an address to connect to: the host is
// required and the port is 1..65535 (a listen address may leave the host
// out and take port 0, a dialled one cannot).
func (l *Loader) DialAddr(name, def string) string {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	if host, port, err := ParseHostPort(v); err != nil || host == "" || port == 0 {
		l.invalid(name, wantDialAddr, v, nil)
		return def
	}
	return v
}

// PortRange parses "LOW-HIGH" (see [ParsePortRange]), or returns def when the
// variable is unset.
func (l *Loader) PortRange(name string, def PortRange) PortRange {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	pr, err := ParsePortRange(v)
	if err != nil {
		l.invalid(name, wantPortRange, v, nil)
		return def
	}
	return pr
}

// IntSet parses comma-separated integers and ranges within [0, n) (see
// [ParseIntSet]), e.g. a consumer group member's partitions "0-3,8". Unset
// gives nil.
func (l *Loader) IntSet(name string, n int) []int {
	v, ok := l.trimmed(name)
	if !ok {
		return nil
	}
	set, err := ParseIntSet(v, n)
	if err == nil && len(set) == 0 {
		// Set, yet naming nothing (","): not the same as unset, which
		// means all (a canary given no partitions would take them all).
		err = ErrInvalid
	}
	if err != nil {
		l.invalid(name, fmt.Sprintf(`numbers 0..%d and ranges, comma-separated ("1,3" or "0-3")`, n-1), v, nil)
		return nil
	}
	return set
}

// Enum returns the allowed value matching the variable case-insensitively
// (spelled as in allowed), or def when it is unset.
func (l *Loader) Enum(name, def string, allowed ...string) string {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	l.invalid(name, "one of "+strings.Join(allowed, "|"), v, nil)
	return def
}

// List splits a comma-separated value, trimming white space around items and
// dropping empty ones, or returns a copy of def when the variable is unset.
func (l *Loader) List(name string, def []string) []string {
	v, ok := l.trimmed(name)
	if !ok {
		return slices.Clone(def)
	}
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	if len(out) == 0 {
		// Set, yet naming nothing (","): refusing it beats taking the
		// default the operator meant to replace.
		l.invalid(name, "comma-separated non-empty items", v, nil)
		return slices.Clone(def)
	}
	return out
}

// File returns a path that must name an existing regular file, or def when
// the variable is unset (def is not checked, so "" can mean "no file").
func (l *Loader) File(name, def string) string {
	v, ok := l.trimmed(name)
	if !ok {
		return def
	}
	fi, err := os.Stat(v)
	if err != nil {
		l.invalid(name, wantFile, v, err)
		return def
	}
	if !fi.Mode().IsRegular() {
		l.invalid(name, wantFile, v, nil)
		return def
	}
	return v
}

// CAFile is [Loader.File] for a PEM bundle of CA certificates: the file
// must hold at least one. Checked here, a bundle that holds none stops the
// start naming its variable, rather than the first TLS connection.
func (l *Loader) CAFile(name, def string) string {
	path := l.File(name, "")
	if path == "" {
		return def
	}
	b, err := os.ReadFile(path)
	if err != nil {
		l.invalid(name, wantFile+" of PEM CA certificates", path, err)
		return def
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		l.invalid(name, wantFile+" of PEM CA certificates", path+" (no PEM certificate in it)", nil)
		return def
	}
	return path
}
