package group

import (
	"fmt"
	"os"
	"strings"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// ValidName reports whether s can name a group, a member, a stream or a KV
// bucket: letters, digits, '-' and '_', starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// MemberIDForm describes a valid member name, for configuration errors.
const MemberIDForm = `letters, digits, "-" and "_", starting with a letter or digit (default: the host name)`

// LoadMemberID reads the member id variable name through l: its value
// when it is a valid member name, the host-derived default
// (MemberIDFromHost) when it is unset. A bad value or a host name that
// yields no id is recorded in l, naming the variable.
func LoadMemberID(l *envconfig.Loader, name string) string {
	id := l.String(name, "")
	if id == "" {
		host, err := MemberIDFromHost()
		if err != nil {
			l.Invalid(name, MemberIDForm, "", err)
		}
		return host
	}
	if !ValidName(id) {
		l.Invalid(name, MemberIDForm, id, nil)
		return ""
	}
	return id
}

// MemberIDFromHost returns the host name (the pod name in Kubernetes) made
// valid as a member name: every other character becomes '-' (a FQDN's dots)
// and leading '-'/'_' are dropped. A stable name lets a restarted pod take
// back its partitions at once.
func MemberIDFromHost() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("host name: %w", err)
	}
	id := MemberIDFrom(host)
	if id == "" {
		return "", fmt.Errorf("host name %q has no letter or digit", host)
	}
	return id, nil
}

// MemberIDFrom turns any string into a valid member name, or "" when it
// has no letter or digit.
func MemberIDFrom(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	return strings.TrimLeft(string(b), "-_")
}
