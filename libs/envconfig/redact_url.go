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
	items := strings.Split(list, ",")
	for i, it := range items {
		items[i] = redactURL(it)
	}
	return strings.Join(items, ",")
}

func redactURL(raw string) string {
	trimmed := strings.TrimSpace(raw)
	u, err := url.Parse(trimmed)
	if err != nil {
		return redactUnparsed(raw)
	}
	if u.User == nil {
		// No user information as url.Parse reads it does not mean no
		// credentials: "a:://u:p@h" parses with scheme "a" and the opaque
		// "://u:p@h", so the item gets the same cut as one that fails.
		return redactUnparsed(raw)
	}
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	u.User = url.User(redactedUserinfo)
	return u.String()
}

func redactUnparsed(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		rest = raw
	}
	host := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host = rest[:i]
	}
	at := strings.LastIndex(host, "@")
	if at < 0 {
		return raw
	}
	prefix := raw[:len(raw)-len(rest)]
	return prefix + redactedUserinfo + rest[at:]
}
