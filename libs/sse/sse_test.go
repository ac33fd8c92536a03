package sse

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t testing.TB, s string) ([]Event, error) {
	t.Helper()
	r := NewReader(strings.NewReader(s))
	var out []Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Event
	}{
		{name: "two frames", in: "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n", want: []Event{{Data: `{"a":1}`}, {Data: `{"b":2}`}}},
		{name: "comments ignored", in: ": ping\n\ndata: x\n\n: ping\n\n", want: []Event{{Data: "x"}}},
		{name: "multi line data", in: "data: a\ndata: b\n\n", want: []Event{{Data: "a\nb"}}},
		{name: "event and id", in: "event: run\nid: 7\ndata: z\n\n", want: []Event{{Type: "run", ID: "7", Data: "z"}}},
		{name: "trailing without blank", in: "data: last", want: []Event{{Data: "last"}}},
		{name: "crlf", in: "data: c\r\n\r\n", want: []Event{{Data: "c"}}},
		{name: "no space after colon", in: "data:x\n\n", want: []Event{{Data: "x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events %+v, want %+v", len(got), got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("event %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestReaderLimit(t *testing.T) {
	r := NewReader(strings.NewReader("data: " + strings.Repeat("x", DefaultMaxEventBytes) + "\n\n"))
	if _, err := r.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err = %v, want ErrEventTooLarge", err)
	}
}

// FuzzReader: any input parses without panic, and frames written in the
// AG-UI form ("data: <line>\n\n") read back exactly.
func FuzzReader(f *testing.F) {
	f.Add("data: hello\n\n", "hi")
	f.Add(": ping\n\n", "")
	f.Fuzz(func(t *testing.T, raw, payload string) {
		if _, err := readAll(t, raw); err != nil && !errors.Is(err, ErrEventTooLarge) {
			t.Fatalf("unexpected error: %v", err)
		}
		if strings.ContainsAny(payload, "\r\n") || payload == "" {
			return
		}
		got, err := readAll(t, "data: "+payload+"\n\n")
		if err != nil || len(got) != 1 {
			t.Fatalf("frame %q: %v %+v", payload, err, got)
		}
		want := payload
		if got[0].Data != want {
			t.Fatalf("data = %q, want %q", got[0].Data, want)
		}
	})
}
