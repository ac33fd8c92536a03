package group

import "testing"

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

func TestResolveMemberID(t *testing.T) {
	if id, err := ResolveMemberID("rm-1"); err != nil || id != "rm-1" {
		t.Errorf("ResolveMemberID(rm-1) = %q, %v", id, err)
	}
	if _, err := ResolveMemberID("a.b"); err == nil {
		t.Error("ResolveMemberID(a.b): no error")
	}
	if id, err := ResolveMemberID(""); err != nil || !ValidName(id) {
		t.Errorf("ResolveMemberID(\"\") = %q, %v; want a valid name from the host name", id, err)
	}
}
