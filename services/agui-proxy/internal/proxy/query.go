package proxy

import "strings"

// upstreamQuery returns the client's raw query as the runner gets it: every
// byte that may not stand in a URI's query (RFC 3986 section 3.4: a space,
// '"', '#', '<', '>', '\\', '^', '`', '{', '|', '}', controls, non-ASCII, and
// a '%' that starts no %XX escape) percent-encoded; everything else, valid
// %XX escapes included, as sent. net/http's HTTP/1 server refuses such a
// target, but its HTTP/2 server checks only that :path starts with a slash:
// written as it came into the runner's HTTP/1.1 request line, a space splits
// the line, and the runner answers 400 to a request the proxy made (found by
// FuzzRouter).
func upstreamQuery(raw string) string {
	i := 0
	for i < len(raw) && queryByteOK(raw, i) {
		i++
	}
	if i == len(raw) {
		return raw
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(raw) + 8)
	b.WriteString(raw[:i])
	for ; i < len(raw); i++ {
		if queryByteOK(raw, i) {
			b.WriteByte(raw[i])
			continue
		}
		c := raw[i]
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// queryByteOK reports whether raw[i] may stand in a URI query as it is:
// pchar, '/' or '?' (RFC 3986), a '%' only as the start of a %XX escape.
func queryByteOK(raw string, i int) bool {
	c := raw[i]
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '%':
		return i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2])
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
