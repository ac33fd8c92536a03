package group

import (
	"fmt"
	"os"
	"strings"
)

// ValidName reports whether s can name a group, a member, a stream or a KV
// bucket: letters, digits, '-' and '_', starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// MemberIDForm describes a valid member name, for configuration errors.
const MemberIDForm = `letters, digits, "-" and "_", starting with a letter or digit (default: the host name)`

// ResolveMemberID returns id when it is a valid member name, or the default
// from MemberIDFromHost when id is empty.
func ResolveMemberID(id string) (string, error) {
	if id == "" {
		return MemberIDFromHost()
	}
	if !ValidName(id) {
		return "", fmt.Errorf("member id %q: want %s", id, MemberIDForm)
	}
	return id, nil
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
