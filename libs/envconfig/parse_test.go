package envconfig

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParsePortRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    PortRange
		wantErr bool
	}{
		{in: "9100-9199", want: PortRange{Low: 9100, High: 9199}},
		{in: "00080-00081", want: PortRange{Low: 80, High: 81}},
		{in: "", wantErr: true},
		{in: "-", wantErr: true},
		{in: "1-", wantErr: true},
		{in: "-1", wantErr: true},
		{in: " 1-2", wantErr: true},
		{in: "1 - 2", wantErr: true},
		{in: "100000-100001", wantErr: true},
		{in: "1-2-3", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePortRange(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParsePortRange(%q) err = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("err %v does not wrap ErrInvalid", err)
			}
			if got != tc.want {
				t.Errorf("ParsePortRange(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	r := PortRange{Low: 10, High: 12}
	if r.Len() != 3 || !r.Contains(10) || !r.Contains(12) || r.Contains(13) || (PortRange{}).Len() != 1 {
		t.Errorf("Len/Contains wrong for %v", r)
	}
	if (PortRange{Low: 2, High: 1}).Len() != 0 {
		t.Error("inverted range Len != 0")
	}
}

// FuzzParsePortRange checks that any input either fails with ErrInvalid or
// gives a valid range whose String form parses back to the same range.
func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"9100-9199", "1-65535", "abc", "0-1", "+1-2", "65535-65535", "1-2-3", "٣-٤"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParsePortRange(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParsePortRange(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if r.Low < 1 || r.Low > r.High || r.High > 65535 {
			t.Fatalf("ParsePortRange(%q) = %v, outside 1 <= LOW <= HIGH <= 65535", s, r)
		}
		back, err := ParsePortRange(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %v: got %v, %v", r, back, err)
		}
	})
}

// FuzzParseDuration checks that any input either fails with ErrInvalid or
// gives a non-negative duration whose String form parses back exactly.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30s", "1m30s", "0", "-1s", "1.5h", "30", "9223372036854775807ns", "1µs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseDuration(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, want >= 0", s, d)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("round trip of %v: got %v, %v", d, back, err)
		}
	})
}

// FuzzParseHostPort checks that an accepted address has a port in range.
func FuzzParseHostPort(f *testing.F) {
	for _, s := range []string{":8080", "127.0.0.1:0", "[::1]:65535", "host", ":65536", ":+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, port, err := ParseHostPort(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseHostPort(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if port < 0 || port > 65535 {
			t.Fatalf("ParseHostPort(%q) port %d out of range", s, port)
		}
	})
}

func TestParseDurationKeepsUnits(t *testing.T) {
	t.Parallel()
	if d, err := ParseDuration("1m30s"); err != nil || d != 90*time.Second {
		t.Errorf("ParseDuration(1m30s) = %v, %v", d, err)
	}
}

func TestParseIntSet(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"", nil, false},
		{" , ", nil, false},
		{"3", []int{3}, false},
		{"3,1, 1", []int{1, 3}, false},
		{"0-3", []int{0, 1, 2, 3}, false},
		{"0-1, 5, 1-2", []int{0, 1, 2, 5}, false},
		{"15", []int{15}, false},
		{"16", nil, true},
		{"-1", nil, true},
		{"3-1", nil, true},
		{"a", nil, true},
		{"1-", nil, true},
		{"1-2-3", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseIntSet(tc.in, 16)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("ParseIntSet(%q, 16) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseIntSet(%q) error %v does not wrap ErrInvalid", tc.in, err)
		}
	}
}

// FuzzParseIntSet: any input fails with ErrInvalid or gives a sorted set of
// distinct numbers in [0, n) whose comma form parses back to the same set.
func FuzzParseIntSet(f *testing.F) {
	for _, s := range []string{"0-3,8", "1,1", "", "7-2", "x", "0--1", " 4 - 5 "} {
		f.Add(s, uint8(16))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		got, err := ParseIntSet(s, int(n))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseIntSet(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		for i, v := range got {
			if v < 0 || v >= int(n) || (i > 0 && got[i-1] >= v) {
				t.Fatalf("ParseIntSet(%q, %d) = %v: not sorted distinct values in range", s, n, got)
			}
		}
		strs := make([]string, len(got))
		for i, v := range got {
			strs[i] = strconv.Itoa(v)
		}
		if again, err := ParseIntSet(strings.Join(strs, ","), int(n)); err != nil || !slices.Equal(again, got) {
			t.Fatalf("ParseIntSet(%q): round trip %v -> %v (%v)", s, got, again, err)
		}
	})
}

func TestHasSpaceOrControl(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{"": false, "informer-0": false, "a b": true, "a\tb": true, "a\u00a0b": true, "a\x00b": true, "tök": false} {
		if got := HasSpaceOrControl(s); got != want {
			t.Errorf("HasSpaceOrControl(%q) = %v, want %v", s, got, want)
		}
	}
}
