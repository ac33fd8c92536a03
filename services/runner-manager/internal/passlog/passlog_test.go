package passlog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/ambient-code/control-plane/services/runner-manager/internal/passlog"
)

// TestReportOncePerOutage: three failing passes make one warning and two
// debug lines, the first pass without a failure one info line with the
// counts, and passes that never failed nothing.
func TestReportOncePerOutage(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := passlog.Log{What: "check failed", Recovered: "check works again", TriedKey: "items", SucceededKey: "done"}
	down := errors.New("api down")
	pass := func(failures, ok int) passlog.Pass {
		var p passlog.Pass
		for i := range failures {
			p.Add(down, slog.Int("item", i))
		}
		for range ok {
			p.Add(nil, slog.Int("item", -1))
		}
		return p
	}
	for _, p := range []passlog.Pass{pass(0, 3), pass(2, 1), pass(3, 0), pass(3, 0), pass(0, 4), pass(0, 4)} {
		l.Report(t.Context(), log, p)
	}
	type record struct {
		Level, Msg               string
		Count, Items, Item, Done int
		FailedPasses             int `json:"failed_passes"`
		Suppressed               int
		Err                      string
	}
	var got []record
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		got = append(got, r)
	}
	want := []record{
		{Level: "WARN", Msg: "check failed; repeats are logged at debug level until a pass has no failure", Count: 2, Items: 3, Item: 0, Err: "api down"},
		{Level: "DEBUG", Msg: "check failed", Count: 3, Items: 3, Item: 0, Err: "api down"},
		{Level: "DEBUG", Msg: "check failed", Count: 3, Items: 3, Item: 0, Err: "api down"},
		{Level: "INFO", Msg: "check works again", Done: 4, FailedPasses: 3, Suppressed: 6},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
