package events

import (
	"errors"
	"strings"
	"testing"
)

func TestEscapeToken(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty is placeholder", in: "", want: "_"},
		{name: "safe passes", in: "abc-XYZ-019", want: "abc-XYZ-019"},
		{name: "dot", in: "a.b", want: "a_2Eb"},
		{name: "wildcards", in: "*>", want: "_2A_3E"},
		{name: "space and tab", in: "a b\tc", want: "a_20b_09c"},
		{name: "underscore escaped", in: "_", want: "_5F"},
		{name: "utf8", in: "é", want: "_C3_A9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := EscapeToken(tc.in)
			if got != tc.want {
				t.Fatalf("EscapeToken(%q) = %q, want %q", tc.in, got, tc.want)
			}
			back, err := UnescapeToken(got)
			if err != nil || back != tc.in {
				t.Fatalf("UnescapeToken(%q) = %q, %v; want %q", got, back, err, tc.in)
			}
		})
	}
}

func TestUnescapeTokenRejects(t *testing.T) {
	for _, tok := range []string{"", "a.b", "_4", "_zz", "_41", "a_2e", "a*", "x y"} {
		if _, err := UnescapeToken(tok); !errors.Is(err, ErrBadToken) {
			t.Errorf("UnescapeToken(%q) err = %v, want ErrBadToken", tok, err)
		}
	}
}

// FuzzToken checks that any string escapes to a valid, reversible subject
// token and KV key segment, and that any accepted token re-escapes to itself.
func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "_", "a.b", "*", ">", " ", "session-1", "../../etc", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := EscapeToken(s)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("EscapeToken(%q) = %q is not a valid token", s, tok)
		}
		for i := 0; i < len(tok); i++ {
			if !tokenSafe(tok[i]) && tok[i] != '_' {
				t.Fatalf("EscapeToken(%q) = %q has byte %q invalid in KV keys", s, tok, tok[i])
			}
		}
		back, err := UnescapeToken(tok)
		if err != nil || back != s {
			t.Fatalf("round trip %q -> %q -> %q, %v", s, tok, back, err)
		}
		// Any token the decoder accepts has exactly one spelling.
		if dec, err := UnescapeToken(s); err == nil && EscapeToken(dec) != s {
			t.Fatalf("UnescapeToken(%q) = %q re-escapes to %q", s, dec, EscapeToken(dec))
		}
	})
}

func FuzzSubject(f *testing.F) {
	f.Add("proj", "id.1")
	f.Add("", "*")
	f.Fuzz(func(t *testing.T, project, id string) {
		for _, r := range Resources {
			subj := Subject(SubjectPrefix, r, project, id)
			got, err := ParseSubject(SubjectPrefix, subj)
			if err != nil {
				t.Fatalf("ParseSubject(%q): %v", subj, err)
			}
			if got.Resource != r || got.ProjectID != project || got.ObjectID != id {
				t.Fatalf("ParseSubject(%q) = %+v", subj, got)
			}
			if n := strings.Count(subj, "."); n != 4 {
				t.Fatalf("subject %q has %d dots, want 4", subj, n)
			}
		}
	})
}

func BenchmarkEscapeToken(b *testing.B) {
	ids := []string{"2c5YjvN8iZ5xS9bYc1Qk3tPq7wE", "my.project with spaces", ""}
	b.ReportAllocs()
	for b.Loop() {
		for _, id := range ids {
			_ = EscapeToken(id)
		}
	}
}
