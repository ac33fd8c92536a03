package envconfig

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// wantPortRange is the expected form of a port range.
const wantPortRange = `"LOW-HIGH" with 1 <= LOW <= HIGH <= 65535`

// maxPort is the largest TCP/UDP port number.
const maxPort = 65535

// errSyntax is the cause returned by the exported parsers; the Loader turns it
// into a [*VarError] naming the variable.
var errSyntax = errors.New("syntax")

// PortRange is an inclusive range of ports, Low <= High.
type PortRange struct {
	Low, High int
}

// String formats r as "LOW-HIGH", the form [ParsePortRange] reads.
func (r PortRange) String() string {
	return strconv.Itoa(r.Low) + "-" + strconv.Itoa(r.High)
}

// Contains reports whether port is in r.
func (r PortRange) Contains(port int) bool {
	return port >= r.Low && port <= r.High
}

// Len is the number of ports in r.
func (r PortRange) Len() int {
	if r.High < r.Low {
		return 0
	}
	return r.High - r.Low + 1
}

// ParsePortRange parses "LOW-HIGH" where both are decimal ports (digits only)
// with 1 <= LOW <= HIGH <= 65535. Errors wrap [ErrInvalid].
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return PortRange{}, fmt.Errorf("port range %q: want %s: %w", s, wantPortRange, ErrInvalid)
	}
	low, errLow := parsePort(lo)
	high, errHigh := parsePort(hi)
	if errLow != nil || errHigh != nil || low < 1 || low > high {
		return PortRange{}, fmt.Errorf("port range %q: want %s: %w", s, wantPortRange, ErrInvalid)
	}
	return PortRange{Low: low, High: high}, nil
}

// HasSpaceOrControl reports whether s holds white space or a control
// character: never part of a host name or an identity, and invisible in
// the log line that would show the value.
func HasSpaceOrControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// ParseHostPort splits "HOST:PORT" and checks 0 <= PORT <= 65535 (digits
// only). HOST may be empty. Errors wrap [ErrInvalid].
func ParseHostPort(s string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("host:port %q: %w", s, errors.Join(ErrInvalid, err))
	}
	if HasSpaceOrControl(host) {
		return "", 0, fmt.Errorf("host:port %q: white space in the host: %w", s, ErrInvalid)
	}
	port, err = parsePort(p)
	if err != nil {
		return "", 0, fmt.Errorf("host:port %q: %w", s, ErrInvalid)
	}
	return host, port, nil
}

// ParseDuration is [time.ParseDuration] restricted to non-negative values.
// Errors wrap [ErrInvalid].
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want %s: %w", s, wantDuration, ErrInvalid)
	}
	return d, nil
}

// parsePort parses 1-5 ASCII digits as a port in [0, 65535]. strconv.Atoi is
// not used directly because it accepts a sign ("+80").
func parsePort(s string) (int, error) {
	if len(s) == 0 || len(s) > 5 {
		return 0, errSyntax
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, errSyntax
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > maxPort {
		return 0, errSyntax
	}
	return n, nil
}

// ParseIntSet parses comma-separated integers and inclusive ranges ("1,3",
// "0-3", "0-1, 5") that must all lie in [0, n). The result is sorted and has
// no duplicates; "" gives nil. Errors wrap [ErrInvalid].
func ParseIntSet(s string, n int) ([]int, error) {
	seen := map[int]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		a, errA := strconv.Atoi(strings.TrimSpace(lo))
		b, errB := a, error(nil)
		if isRange {
			b, errB = strconv.Atoi(strings.TrimSpace(hi))
		}
		if errA != nil || errB != nil || a < 0 || b < a || b >= n {
			return nil, fmt.Errorf("%q: want numbers or ranges within 0..%d: %w", item, n-1, ErrInvalid)
		}
		for v := a; v <= b; v++ {
			seen[v] = true
		}
	}
	if len(seen) == 0 {
		return nil, nil
	}
	out := make([]int, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}
