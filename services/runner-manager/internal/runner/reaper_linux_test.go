package runner

import (
	"fmt"
	"testing"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		want proc
		ok   bool
	}{
		{"plain", "42 (sleep) S 7 42 42 0", proc{pid: 42, ppid: 7, state: 'S'}, true},
		{"comm with spaces and parens", "42 (a) b (c)) Z 1 0 0", proc{pid: 42, ppid: 1, state: 'Z'}, true},
		{"no comm", "42 sleep S 7", proc{}, false},
		{"truncated", "42 (x)", proc{}, false},
		{"bad ppid", "42 (x) S x", proc{}, false},
		{"long state", "42 (x) SS 7", proc{}, false},
		{"state not a letter", "42 (x) \x81 7", proc{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(42, []byte(tc.line))
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseStat(%q) = %+v, %v; want %+v, ok %v", tc.line, got, err, tc.want, tc.ok)
			}
		})
	}
}

// FuzzParseStat: any bytes, no panic; a parsed line round-trips its
// fields.
func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1"))
	f.Add([]byte("9 ((((x)))) Z 3"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseStat(5, b)
		if err != nil {
			return
		}
		line := fmt.Sprintf("5 (c) %c %d", p.state, p.ppid)
		q, err := parseStat(5, []byte(line))
		if err != nil || q != p {
			t.Fatalf("round trip of %+v via %q = %+v, %v", p, line, q, err)
		}
	})
}
