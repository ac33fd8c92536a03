package events

import "testing"

func TestValidPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix string
		want   bool
	}{
		{SubjectPrefix, true},
		{ShadowSubjectPrefix, true},
		{DLQPrefix, true},
		{"single", true},
		{"", false},
		{".ambient", false},
		{"ambient.", false},
		{"ambient..events", false},
		{"ambient.*", false},
		{"ambient.>", false},
		{"ambient events", false},
		{"ambient.\tevents", false},
	}
	for _, tc := range tests {
		if got := ValidPrefix(tc.prefix); got != tc.want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
}
