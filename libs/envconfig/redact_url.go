package envconfig

import (
	"net/url"
	"strings"
)

// redactedUserinfo replaces credentials in a URL.
const redactedUserinfo = "xxxxx"

// RedactURLs returns a comma-separated URL list (one URL is a list of one)
// with the credentials of each URL replaced, for logs and error messages:
// "nats://u:p@h" becomes "nats://u:xxxxx@h" (url.URL.Redacted), and a user
// without a password, which NATS reads as a token ("nats://tok@h"), becomes
// "nats://xxxxx@h". An item that does not parse loses everything between
// "://" and its last "@", so a malformed URL cannot leak a password either.
func RedactURLs(list string) string {
	items := joinUserinfoCommas(strings.Split(list, ","))
	for i, it := range items {
		items[i] = redactURL(it)
	}
	return strings.Join(items, ",")
}

// joinUserinfoCommas puts back together the pieces of a URL that a comma in
// its user information split ("nats://u:se,cret@h" is "nats://u:se" and
// "cret@h"): pieces without "://" up to one holding an "@" (the end of the
// credentials) continue the URL before them. Redacted apart, the first
// piece would keep "se", the start of the password, having no "@" to end
// the credentials at. Other pieces without "://" stay items of their own.
func joinUserinfoCommas(items []string) []string {
	var out []string
	run := 0 // pieces without "://" since the last URL, not yet joined
	for _, it := range items {
		switch {
		case strings.Contains(it, "://"):
			run = 0
		case len(out) > run && strings.Contains(it, "@"):
			head := len(out) - run - 1
			out[head] = strings.Join(append(out[head:], it), ",")
			out = out[:head+1]
			run = 0
			continue
		default:
			run++
		}
		out = append(out, it)
	}
	return out
}

func redactURL(raw string) string {
	trimmed := strings.TrimSpace(raw)
	u, err := url.Parse(trimmed)
	if err != nil {
		// A "/", "?" or "#" in a password that is not percent-encoded (a
		// base64 password often holds "/") ends the authority early and
		// makes the URL fail to parse: the credentials run to the item's
		// last "@", wherever it is.
		return redactUnparsed(raw, "")
	}
	if u.User == nil {
		// No user information as url.Parse reads it does not mean no
		// credentials: "a:://u:p@h" parses with scheme "a" and the opaque
		// "://u:p@h", and "nats://t0k/en@h" (a token holding "/") as host
		// "t0k" with a path. Only an "@" in the query or fragment is
		// left alone ("https://idp/jwks?owner=a@b").
		return redactUnparsed(raw, "?#")
	}
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	u.User = url.User(redactedUserinfo)
	return u.String()
}

// redactUnparsed replaces what lies between "://" and the last "@" of raw
// before the first of the characters in end (all of raw when end is "").
func redactUnparsed(raw, end string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		rest = raw
	}
	creds := rest
	if end != "" {
		if i := strings.IndexAny(rest, end); i >= 0 {
			creds = rest[:i]
		}
	}
	at := strings.LastIndex(creds, "@")
	if at < 0 {
		return raw
	}
	prefix := raw[:len(raw)-len(rest)]
	return prefix + redactedUserinfo + rest[at:]
}
