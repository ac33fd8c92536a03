package demorunner

import "strings"

// traceParent is the W3C Trace Context of a request: the caller's trace
// and the span that made the request (the agui-proxy's client span).
type traceParent struct {
	TraceID, ParentID string
}

// parseTraceparent reads a traceparent header as W3C Trace Context level 1
// defines it: version-traceid-parentid-flags in lower-case hex, 2-32-16-2
// digits; version ff, an all-zero trace id and an all-zero parent id are
// invalid. A later version may append fields after the flags, so only
// version 00 must be exactly 55 characters. ok is false for anything else:
// a runner logs what it received, it never fails a run over it.
func parseTraceparent(h string) (traceParent, bool) {
	parts := strings.SplitN(h, "-", 5)
	if len(parts) < 4 {
		return traceParent{}, false
	}
	version, traceID, parentID, flags := parts[0], parts[1], parts[2], parts[3]
	switch {
	case !isHex(version, 2) || version == "ff",
		version == "00" && len(parts) != 4,
		!isHex(traceID, 32) || traceID == strings.Repeat("0", 32),
		!isHex(parentID, 16) || parentID == strings.Repeat("0", 16),
		!isHex(flags, 2):
		return traceParent{}, false
	}
	return traceParent{TraceID: traceID, ParentID: parentID}, true
}

// isHex reports whether s is n lower-case hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
