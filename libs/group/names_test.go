package group

import (
	"errors"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

func TestMemberIDFrom(t *testing.T) {
	tests := []struct{ in, want string }{
		{"runner-manager-5d8f9c7b6-x2x4q", "runner-manager-5d8f9c7b6-x2x4q"},
		{"host.example.com", "host-example-com"},
		{"_-.pod", "pod"},
		{"ünï", "n--"},
		{"...", ""},
	}
	for _, tc := range tests {
		got := MemberIDFrom(tc.in)
		if got != tc.want {
			t.Errorf("MemberIDFrom(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got != "" && !ValidName(got) {
			t.Errorf("MemberIDFrom(%q) = %q is not a valid name", tc.in, got)
		}
	}
}

func FuzzMemberIDFrom(f *testing.F) {
	for _, s := range []string{"a.b", "", "-_x", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := MemberIDFrom(s); got != "" && !ValidName(got) {
			t.Fatalf("MemberIDFrom(%q) = %q is not a valid name", s, got)
		}
	})
}

func TestLoadMemberID(t *testing.T) {
	l := envconfig.New(envconfig.Map(map[string]string{"GOOD": "rm-1", "BAD": "a.b"}))
	if id := LoadMemberID(l, "GOOD"); id != "rm-1" {
		t.Errorf("LoadMemberID(GOOD) = %q", id)
	}
	if id := LoadMemberID(l, "UNSET"); !ValidName(id) {
		t.Errorf("LoadMemberID(UNSET) = %q; want a valid name from the host name", id)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err() = %v after valid values", err)
	}
	if id := LoadMemberID(l, "BAD"); id != "" {
		t.Errorf("LoadMemberID(BAD) = %q, want \"\"", id)
	}
	var ve *envconfig.VarError
	if err := l.Err(); !errors.As(err, &ve) || ve.Name != "BAD" {
		t.Fatalf("Err() = %v, want a VarError naming BAD", err)
	}
}
