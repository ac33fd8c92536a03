package memapi

import "testing"

// TestTSLAccepts: tslAccepts agrees with the real server's parser,
// tree-search-language's ParseTSL at the version ambient-api-server's
// go.mod pins (v0.0.0-20190923184055-1c2dad2e354b, its TSL.g4 and
// pkg/tsl/listener.go). Each want below is ParseTSL's own answer, taken by
// running that version on the query; so is that of about 900,000 random
// and grammar-generated queries the recognizer was compared on.
func TestTSLAccepts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		q    string
		want bool
	}{
		{"name = 'a'", true},
		{"name='a' and (phase in ('Running','Pending'))", true},
		{"not name = 'x'", true},
		{"(name) = 'x'", true},
		{"((a + 1) * b) > 2 or c is not null", true},
		{"a in ()", true},
		{"a between 1 and 2", true},
		{"a not between 1 and 2", true},
		{"a is 5", true},
		{"a ~= 'x'", true},
		{"a.b.c = 1", true},
		{"a = -1", true},
		{"a = +1.5e3", true},
		{"a = 1.", true},
		{"\tname = 'a'\n", true},
		{"project_id = 'p' and (name='a') or (name='b')", true},
		{"name like 5", false},            // the listener wants a string
		{"a + 'x' = 1", false},            // no string in arithmetic
		{"a ~= 5", false},                 // the listener wants a string
		{"name = 'a' 'b'", false},         // trailing literal
		{"name = ", false},                // no value
		{"name", false},                   // no condition
		{"1 = name", false},               // a literal on the left
		{"a.b.c.d = 1", false},            // at most three name parts
		{"llm_max_tokens = 1e999", false}, // ParseFloat refuses it
		{"((name = 'a')", false},          // unbalanced
		{"name = 'a' )", false},           // unbalanced
		{"( ( not ) ) <= 'r'", false},
		{"name = 'a'\f", false}, // \f is no TSL space
		{"name = 'a'; drop", false},
		{"in = 'a'", false}, // a keyword is no field name
		{"name = 'unterminated", false},
		{"", false},
	} {
		if got := tslAccepts(tc.q); got != tc.want {
			t.Errorf("tslAccepts(%q) = %v, want %v", tc.q, got, tc.want)
		}
	}
}
