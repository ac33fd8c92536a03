package events

import (
	"crypto/sha256"
	"encoding/hex"
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
	for _, s := range []string{"", "_", "a.b", "*", ">", " ", "session-1", "../../etc", "\x00", "é",
		strings.Repeat("a", MaxTokenLen), strings.Repeat("a", MaxTokenLen+1), strings.Repeat("é", 21), strings.Repeat("é", 22),
		"_L" + strings.Repeat("0", 32), strings.Repeat("項", 500)} {
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
		// A subject token is bounded, is the escape when that fits and a
		// digest token no escape can be otherwise, and BoundToken of the
		// escape agrees with it.
		st := SubjectToken(s)
		switch {
		case len(st) > MaxTokenLen:
			t.Fatalf("SubjectToken(%q) = %q is %d bytes, over %d", s, st, len(st), MaxTokenLen)
		case len(tok) <= MaxTokenLen && st != tok:
			t.Fatalf("SubjectToken(%q) = %q, want the escape %q", s, st, tok)
		case len(tok) > MaxTokenLen && !IsDigestToken(st):
			t.Fatalf("SubjectToken(%q) = %q is no digest token", s, st)
		case IsDigestToken(tok):
			t.Fatalf("EscapeToken(%q) = %q looks like a digest token", s, tok)
		}
		if _, err := UnescapeToken(st); IsDigestToken(st) && !errors.Is(err, ErrBadToken) {
			t.Fatalf("UnescapeToken(%q) of a digest token: err = %v, want ErrBadToken", st, err)
		}
		if bt := BoundToken(tok); bt != st {
			t.Fatalf("BoundToken(%q) = %q, want SubjectToken's %q", tok, bt, st)
		}
		if bt := BoundToken(s); len(bt) > MaxTokenLen || (len(s) <= MaxTokenLen && bt != s) {
			t.Fatalf("BoundToken(%q) = %q", s, bt)
		}
	})
}

// FuzzSubject checks that any ids make a subject of the layout, no longer
// than two tokens of MaxTokenLen allow, that parses back to them, or to a
// flagged digest token for an id too long to carry.
func FuzzSubject(f *testing.F) {
	f.Add("proj", "id.1")
	f.Add("", "*")
	f.Add(strings.Repeat("p", 5000), "s1")
	f.Add(strings.Repeat("項", 500), strings.Repeat("i", MaxTokenLen+1))
	f.Fuzz(func(t *testing.T, project, id string) {
		for _, r := range Resources {
			subj := Subject(SubjectPrefix, r, project, id)
			if limit := len(SubjectPrefix+"."+ResourceToken(r)+"..") + 2*MaxTokenLen; len(subj) > limit {
				t.Fatalf("subject %q is %d bytes, over %d", subj, len(subj), limit)
			}
			got, err := ParseSubject(SubjectPrefix, subj)
			if err != nil {
				t.Fatalf("ParseSubject(%q): %v", subj, err)
			}
			wantProject, wantID := project, id
			if got.ProjectHashed {
				wantProject = ""
			}
			if got.ObjectHashed {
				wantID = ""
			}
			if got.Resource != r || got.ProjectID != wantProject || got.ObjectID != wantID ||
				got.ProjectHashed != (len(EscapeToken(project)) > MaxTokenLen) || got.ObjectHashed != (len(EscapeToken(id)) > MaxTokenLen) {
				t.Fatalf("ParseSubject(%q) = %+v", subj, got)
			}
			if n := strings.Count(subj, "."); n != 4 {
				t.Fatalf("subject %q has %d dots, want 4", subj, n)
			}
		}
	})
}

// TestSubjectLengthBounded: the API takes a project_id of any length, and
// the subject carried it escaped: 5,000 ASCII or 500 CJK characters (each
// byte of these three escaped to three) made a subject over nats-server's
// max_control_line (4096), which closed the publisher's connection for
// good. Every subject is now at most two 128-byte tokens longer than its
// fixed parts, one object's is always the same, and two long ids differ.
func TestSubjectLengthBounded(t *testing.T) {
	t.Parallel()
	res := Resources[0]
	limit := len(SubjectPrefix+".project_settings..") + 2*128
	long := []string{strings.Repeat("p", 5000), strings.Repeat("項", 500), strings.Repeat("a", 129), strings.Repeat("é", 22), strings.Repeat("p", 4999) + "q"}
	seen := map[string]string{}
	for _, id := range long {
		for _, subj := range []string{Subject(SubjectPrefix, res, id, "s1"), Subject(SubjectPrefix, res, "p1", id)} {
			if len(subj) > limit {
				t.Errorf("subject of a %d-byte id is %d bytes, want at most %d", len(id), len(subj), limit)
			}
		}
		subj := Subject(SubjectPrefix, res, id, "s1")
		if again := Subject(SubjectPrefix, res, id, "s1"); again != subj {
			t.Errorf("subject of a %d-byte id changes: %q, then %q", len(id), subj, again)
		}
		if other, dup := seen[subj]; dup {
			t.Errorf("ids of %d and %d bytes share the subject %q", len(other), len(id), subj)
		}
		seen[subj] = id
	}
}

// TestSubjectToken pins the digest form: "_L" and 32 lower-case hex digits
// of SHA-256 for an id whose escape is over MaxTokenLen bytes, the escape
// itself up to that length.
func TestSubjectToken(t *testing.T) {
	t.Parallel()
	fits := strings.Repeat("é", MaxTokenLen/6) + strings.Repeat("a", MaxTokenLen%6) // escapes to exactly MaxTokenLen bytes
	if tok := SubjectToken(fits); tok != EscapeToken(fits) || len(tok) != MaxTokenLen {
		t.Fatalf("SubjectToken of an id escaping to %d bytes = %q, want the escape", len(EscapeToken(fits)), tok)
	}
	over := fits + "."
	sum := sha256.Sum256([]byte(over))
	want := "_L" + hex.EncodeToString(sum[:16])
	if tok := SubjectToken(over); tok != want || !IsDigestToken(tok) {
		t.Fatalf("SubjectToken of an id escaping to %d bytes = %q, want %q", len(EscapeToken(over)), tok, want)
	}
	if _, err := UnescapeToken(want); !errors.Is(err, ErrBadToken) {
		t.Fatalf("UnescapeToken(%q) err = %v, want ErrBadToken", want, err)
	}
	for _, tok := range []string{"_L" + strings.Repeat("0", 31), "_L" + strings.Repeat("A", 32), "_M" + strings.Repeat("0", 32), EscapeToken("_L" + strings.Repeat("0", 32))} {
		if IsDigestToken(tok) {
			t.Errorf("IsDigestToken(%q) = true", tok)
		}
	}
	parts, err := ParseSubject(SubjectPrefix, Subject(SubjectPrefix, Resources[0], over, "s.1"))
	if err != nil || !parts.ProjectHashed || parts.ProjectID != "" || parts.ObjectHashed || parts.ObjectID != "s.1" {
		t.Fatalf("ParseSubject of a digest project token = %+v, %v", parts, err)
	}
	if got := BoundToken(EscapeToken(over)); got != want {
		t.Fatalf("BoundToken of the escape = %q, want %q", got, want)
	}
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
