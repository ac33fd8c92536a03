package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
	"google.golang.org/protobuf/proto"
)

// versionMicrosWidth pads the micro-second timestamp so versions compare as
// strings in time order until the year 5138.
const versionMicrosWidth = 17

// contentHashLen is the number of hex digits kept of the SHA-256; 64 bits are
// plenty to tell successive states of one object apart.
const contentHashLen = 16

// Version identifies one state of an object: "<updated_at in unix micros,
// zero padded>-<content hash>". It changes with every content change, and
// versions of one object order by updated_at as plain strings. updated_at is
// truncated to microseconds because the real server sends microseconds on
// watch and list but nanoseconds on mutation responses.
func Version(updatedAt time.Time, content proto.Message) string {
	micros := int64(0)
	if !updatedAt.IsZero() {
		micros = updatedAt.UnixMicro()
	}
	if micros < 0 {
		micros = 0
	}
	return fmt.Sprintf("%0*d-%s", versionMicrosWidth, micros, ContentHash(content))
}

// VersionOf is Version for an API object, using its own updated_at.
func VersionOf[T APIObject](obj T) string {
	ts := obj.GetMetadata().GetUpdatedAt()
	var at time.Time
	if ts != nil {
		at = ts.AsTime()
	}
	return Version(at, obj)
}

// ContentHash hashes the deterministic encoding of m with metadata.updated_at
// cleared, so the same content read through different paths (watch, list,
// mutation response) hashes the same.
func ContentHash(m proto.Message) string {
	if m == nil {
		return strings.Repeat("0", contentHashLen)
	}
	c := proto.Clone(m)
	clearUpdatedAt(c)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// Marshal of a valid in-memory message only fails for invalid UTF-8 in
		// strings; hash the text form instead so the version still changes.
		b = []byte(fmt.Sprint(c))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:contentHashLen]
}

func clearUpdatedAt(m proto.Message) {
	type withMeta interface {
		GetMetadata() *ambientv1.ObjectReference
	}
	if wm, ok := m.(withMeta); ok && wm.GetMetadata() != nil {
		wm.GetMetadata().UpdatedAt = nil
	}
}

// VersionTime returns the updated_at encoded in a version made by Version.
func VersionTime(version string) (time.Time, bool) {
	micros, _, ok := strings.Cut(version, "-")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMicro(n).UTC(), true
}

// Newer reports whether version a is strictly newer than b: a later
// updated_at. Equal timestamps with different content are not ordered, and
// callers treat them as "not older" (see NotOlder).
func Newer(a, b string) bool {
	ta, okA := VersionTime(a)
	tb, okB := VersionTime(b)
	if !okA || !okB {
		return false
	}
	return ta.After(tb)
}

// NotOlder reports whether version a is at least as new as b.
func NotOlder(a, b string) bool {
	return !Newer(b, a)
}
