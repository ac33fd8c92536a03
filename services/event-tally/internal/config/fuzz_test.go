package config

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParsePartitions: any input either fails or gives sorted-by-input,
// in-range partitions whose comma form parses back to the same list.
func FuzzParsePartitions(f *testing.F) {
	for _, s := range []string{"", "0", "1,3", "0-3", "0-1,5", " 2 , 4-5 ", "3-1", "-1", "16", "a", "1-", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		parts, err := parsePartitions(s, DefaultPartitions)
		if err != nil {
			return
		}
		strs := make([]string, len(parts))
		for i, p := range parts {
			if p < 0 || p >= DefaultPartitions {
				t.Fatalf("%q: partition %d out of range", s, p)
			}
			strs[i] = strconv.Itoa(p)
		}
		again, err := parsePartitions(strings.Join(strs, ","), DefaultPartitions)
		if err != nil || !slices.Equal(again, parts) {
			t.Fatalf("%q: round trip %v -> %v (%v)", s, parts, again, err)
		}
	})
}
