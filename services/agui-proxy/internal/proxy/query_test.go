package proxy

import (
	"net/url"
	"testing"
)

func TestUpstreamQuery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a=1&b=2", "a=1&b=2"},
		{"q=a%20b&x=%2F..", "q=a%20b&x=%2F.."},
		{"path=/a/b?c:d@e;f=g,h!$'()*+~", "path=/a/b?c:d@e;f=g,h!$'()*+~"},
		{"027C8a 0", "027C8a%200"},
		{"a=b HTTP/1.0", "a=b%20HTTP/1.0"},
		{`x="<>\^` + "`{|}#", "x=%22%3C%3E%5C%5E%60%7B%7C%7D%23"},
		{"p=100%", "p=100%25"},
		{"p=%zz&q=%4", "p=%25zz&q=%254"},
		{"ü=1", "%C3%BC=1"},
		{"a\x00b\x7f", "a%00b%7F"},
	} {
		if got := upstreamQuery(tc.in); got != tc.want {
			t.Errorf("upstreamQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzUpstreamQuery: the result is a valid query that means what the input
// meant (the same bytes once unescaped, where the input's own escapes are
// valid), a valid input passes unchanged, and the function is idempotent.
func FuzzUpstreamQuery(f *testing.F) {
	for _, s := range []string{"", "a=1", "027C8a 0", "p=100%", "%zz", "x=%2F..#f", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := upstreamQuery(in)
		for i := range len(out) {
			if !queryByteOK(out, i) {
				t.Fatalf("upstreamQuery(%q) = %q: byte %d (%q) is not valid in a query", in, out, i, out[i])
			}
		}
		if again := upstreamQuery(out); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
		valid := true
		for i := range len(in) {
			valid = valid && queryByteOK(in, i)
		}
		if valid && out != in {
			t.Fatalf("valid query %q changed to %q", in, out)
		}
		// Escaping the literal '%'s of the input first gives what it meant;
		// the output must unescape to the same bytes.
		if got, err := url.PathUnescape(out); err != nil {
			t.Fatalf("%q does not unescape: %v", out, err)
		} else if want, err := url.PathUnescape(literalPercents(in)); err == nil && got != want {
			t.Fatalf("upstreamQuery(%q) = %q means %q, want %q", in, out, got, want)
		}
	})
}

// literalPercents escapes each '%' of s that starts no %XX escape.
func literalPercents(s string) string {
	out := make([]byte, 0, len(s))
	for i := range len(s) {
		if s[i] == '%' && !queryByteOK(s, i) {
			out = append(out, "%25"...)
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}
