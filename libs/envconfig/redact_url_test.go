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
}

// FuzzRedactURLs: never panics, and a password (or token) in the user
// information of any item never survives, whatever the rest of the list.
func FuzzRedactURLs(f *testing.F) {
	f.Add("nats", "u", "s3cret-pw", "n:4222", "tls://x:4222")
	f.Add("tls", "", "tok-123456", "[::1]:4222", "")
	f.Add("nats", "u", "p%zzass-word", "bad host", "nats://a@b")
	f.Fuzz(func(t *testing.T, scheme, user, pass, host, other string) {
		list := scheme + "://" + user + ":" + pass + "@" + host + "," + other
		out := RedactURLs(list)
		// Only a secret that cannot be read as something else is checked: it
		// must not end the authority early or appear elsewhere in the input.
		if len(pass) < 6 || strings.ContainsAny(pass, "/?#@,") || strings.ContainsAny(user, "/?#@,") ||
			strings.Contains(scheme+user+host+other, pass) || strings.Contains(scheme, "://") || strings.ContainsAny(scheme, ",/?#@") {
			return
		}
		if strings.Contains(out, pass) {
			t.Fatalf("RedactURLs(%q) = %q keeps the password", list, out)
		}
	})
}
