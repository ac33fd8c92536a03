package envconfig

import (
	"strings"
	"testing"
)

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:s3cret@nats:4222", "nats://user:xxxxx@nats:4222"},
		{"nats://s3cret@nats:4222", "nats://xxxxx@nats:4222"},
		{"nats://a:s3cret@n1:4222,tls://b:s3cret@n2:4222", "nats://a:xxxxx@n1:4222,tls://b:xxxxx@n2:4222"},
		{"nats://u:s3cret@bad host:4222", "nats://xxxxx@bad host:4222"},
		{"nats://u:s3cret%zz@n:4222/x", "nats://xxxxx@n:4222/x"},
		{"https://idp.example/jwks?x=a@b", "https://idp.example/jwks?x=a@b"},
		{"A:://0:s3cret@h,0", "A:://xxxxx@h,0"},
		// A password that is not percent-encoded: "/", "?" or "#" ends the
		// authority early, so the URL does not parse and its "@" is not
		// in what url.Parse would call the host (base64 passwords hold "/").
		{"nats://u:ab/s3cret@n:4222", "nats://xxxxx@n:4222"},
		{"nats://u:ab?s3cret@n:4222", "nats://xxxxx@n:4222"},
		{"nats://u:ab#s3cret@n:4222", "nats://xxxxx@n:4222"},
		// A token with "/" parses, as host "t0k" and a path.
		{"nats://t0k/s3cret@n:4222", "nats://xxxxx@n:4222"},
		// A comma in a password splits the list inside the user
		// information: the piece before it is no URL of its own.
		{"nats://u:s3c,ret@n:4222", "nats://u:xxxxx@n:4222"},
		{"nats://u:1234,5678@n:4222,tls://m:4222", "nats://u:xxxxx@n:4222,tls://m:4222"},
		{"nats://u:a,b,s3cret@n:4222", "nats://u:xxxxx@n:4222"},
		{"nats://a:4222, nats://b:4222", "nats://a:4222, nats://b:4222"},
		{"nats://u:s3cret@n:4222,bogus", "nats://u:xxxxx@n:4222,bogus"},
	}
	for _, tc := range tests {
		if got := RedactURLs(tc.in); got != tc.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestInvalidURLListNeverEchoesCredentials: the config error for a bad
// NATS_URL-like list names the variable without the password in it.
func TestInvalidURLListNeverEchoesCredentials(t *testing.T) {
	t.Parallel()
	l := New(Map(map[string]string{"NATS_URL": "nats://u:s3cret@n1:4222,http://u:s3cret@n2", "JWKS": "ftp://u:s3cret@idp"}))
	l.URLList("NATS_URL", "", "nats", "tls")
	l.URL("JWKS", "", "https")
	err := l.Err()
	if err == nil || !strings.Contains(err.Error(), "NATS_URL") || !strings.Contains(err.Error(), "JWKS") {
		t.Fatalf("err = %v, want both variables named", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks the password: %v", err)
	}
	// Passwords that are not percent-encoded make the value invalid; the
	// error must not show them either (a base64 password often holds "/").
	for _, v := range []string{"nats://svc:ab/s3cret+x@nats:4222", "nats://svc:ab?s3cret@nats:4222",
		"nats://svc:ab#s3cret@nats:4222", "nats://svc:s3c,ret@nats:4222"} {
		l := New(Map(map[string]string{"NATS_URL": v}))
		l.URLList("NATS_URL", "", "nats", "tls")
		l.URL("NATS_URL", "", "nats", "tls")
		err := l.Err()
		if err == nil || !strings.Contains(err.Error(), "NATS_URL") {
			t.Fatalf("NATS_URL=%q: err = %v, want NATS_URL named", v, err)
		}
		if strings.Contains(err.Error(), "s3c") {
			t.Errorf("NATS_URL=%q: error leaks the password: %v", v, err)
		}
	}
}

// FuzzRedactURLs: never panics, and a password (or token) in the user
// information of any item never survives, whatever the rest of the list.
func FuzzRedactURLs(f *testing.F) {
	f.Add("nats", "u", "s3cret-pw", "n:4222", "tls://x:4222")
	f.Add("tls", "", "tok-123456", "[::1]:4222", "")
	f.Add("nats", "u", "p%zzass-word", "bad host", "nats://a@b")
	f.Add("nats", "u", "ab/s3cret+x", "n:4222", "")
	f.Add("nats", "u", "12,s3cret", "n:4222", "tls://m:4222")
	f.Fuzz(func(t *testing.T, scheme, user, pass, host, other string) {
		list := scheme + "://" + user + ":" + pass + "@" + host + "," + other
		out := RedactURLs(list)
		// Only a secret that cannot be read as something else is checked: it
		// must not end the authority early or appear elsewhere in the input.
		// A "/" or "," in the password is checked too: it ends the
		// authority, or the list item, before the "@".
		// A password of hex digits alone may also be made by the
		// percent-encoding of the rest ("# 000000" is "#%20000000").
		if len(pass) < 6 || strings.ContainsAny(pass, "?#@") || strings.Trim(pass, "0123456789abcdefABCDEF") == "" || strings.ContainsAny(user, "/?#@,") ||
			strings.Contains(scheme+user+host+other, pass) || strings.Contains(scheme, "://") || strings.ContainsAny(scheme, ",/?#@") {
			return
		}
		if strings.Contains(out, pass) {
			t.Fatalf("RedactURLs(%q) = %q keeps the password", list, out)
		}
	})
}
