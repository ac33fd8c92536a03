package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level string
		want  []string // levels that reach the output
	}{
		{level: "debug", want: []string{"DEBUG", "INFO", "WARN", "ERROR"}},
		{level: "info", want: []string{"INFO", "WARN", "ERROR"}},
		{level: "", want: []string{"INFO", "WARN", "ERROR"}},
		{level: "WARN", want: []string{"WARN", "ERROR"}},
		{level: " error ", want: []string{"ERROR"}},
	}
	for _, tc := range tests {
		t.Run(tc.level, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log, err := NewLogger(tc.level, &buf)
			if err != nil {
				t.Fatalf("NewLogger(%q): %v", tc.level, err)
			}
			log.Debug("d")
			log.Info("i")
			log.Warn("w")
			log.Error("e")
			var got []string
			sc := bufio.NewScanner(&buf)
			for sc.Scan() {
				var rec struct {
					Level string `json:"level"`
					Msg   string `json:"msg"`
				}
				if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
					t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
				}
				got = append(got, rec.Level)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("levels written (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewLoggerBadLevel(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"verbose", "trace", "warning", "1"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			log, err := NewLogger(level, &bytes.Buffer{})
			if log != nil || !errors.Is(err, ErrInvalidLevel) {
				t.Fatalf("NewLogger(%q) = %v, %v; want nil, ErrInvalidLevel", level, log, err)
			}
			if !strings.Contains(err.Error(), `"`+level+`"`) {
				t.Errorf("error %q does not name the bad value %q", err, level)
			}
		})
	}
}
